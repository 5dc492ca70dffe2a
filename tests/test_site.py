"""The course as a website (`make html`, scripts/build_html.py).

* Static widgets: a widget tree saved by nbclient becomes HTML that shows the controls' values and the
  figure the widget's Output held (no kernel, no Chromium needed).
* The site in a browser: build lesson 01 alone into a temporary folder (or, with
  ``LDM_EDU_SITE_DIR=build/html``, take a site `make html` built and check every page), open the index
  and the lesson pages in headless Chromium, from disk (file://) as an offline reader would, and check
  that every <img> loaded, math was typeset (when MathJax was bundled), and that no request failed or
  went to another host. Screenshots are kept in build/site/.
"""
from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

from browser_support import ARTEFACTS, ROOT, chromium, is_local, require_browser

sys.path.insert(0, str(ROOT / "scripts"))
import build_html  # noqa: E402

PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e4a9e0a60000000049454e44ae426082")).decode()


def _widget_notebook() -> nbformat.NotebookNode:
    """A notebook as nbclient leaves it: one widget view, its state (VBox[HBox[slider], Output])."""
    nb = nbformat.v4.new_notebook()
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_row", "IPY_MODEL_out"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_s", "IPY_MODEL_g"]}},
        "s": {"model_name": "FloatSliderModel", "state": {"value": 1.25, "min": -3.0, "max": 3.0, "description": "z1"}},
        "g": {"model_name": "SelectionSliderModel",
              "state": {"_options_labels": ["0", "1", "4"], "index": 2, "description": "w"}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"image/png": PNG_1PX, "text/plain": "<Figure>"}, "metadata": {}},
            {"output_type": "stream", "name": "stdout", "text": "decoded <z>\n"}]}},
    }
    nb.metadata["widgets"] = {build_html.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": state}}
    view = {"output_type": "display_data", "metadata": {},
            "data": {build_html.WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0},
                     "text/plain": "VBox(...)"}}
    nb.cells = [nbformat.v4.new_code_cell("display(box)", outputs=[nbformat.from_dict(view)])]
    return nb


def test_widget_views_become_static_html():
    nb = _widget_notebook()
    assert build_html.staticize_widgets(nb) == 1
    out = nb.cells[0].outputs[0]["data"]
    assert build_html.WIDGET_VIEW not in out and "widgets" not in nb.metadata   # no widget manager needed
    page = out["text/html"]
    assert f'src="data:image/png;base64,{PNG_1PX}"' in page                     # the Output's figure
    assert 'value="1.25"' in page and ">1.25<" in page and ">z1<" in page      # slider value and label
    assert ">4<" in page and ">w<" in page                                      # selection slider shows its label
    assert "decoded &lt;z&gt;" in page                                          # text escaped
    assert build_html.count_figures(nb) == 1


def test_missing_widget_state_is_said_not_dropped():
    nb = _widget_notebook()
    nb.metadata.pop("widgets")
    build_html.staticize_widgets(nb)
    assert "widget not saved" in nb.cells[0].outputs[0]["data"]["text/html"]


def test_every_lesson_has_one_gallery_figure_named_by_one_cell():
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(build_html.GALLERY) == [p.stem[:2] for p in lessons]
    for path in lessons:
        contains, _, caption = build_html.GALLERY[path.stem[:2]]
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and contains in "".join(c.source)]
        assert len(cells) == 1, f"{path.name}: {len(cells)} cells contain {contains!r}"
        assert caption


def test_gallery_figure_takes_the_named_cells_png_or_says_why_not():
    nb = nbformat.v4.new_notebook()
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG_1PX, "text/plain": "<Figure>"}}
    nb.cells = [nbformat.v4.new_code_cell("plot(a)", outputs=[nbformat.from_dict(png)]),
                nbformat.v4.new_code_cell("plot(b)")]
    assert build_html.gallery_figure(nb, "plot(a)") == base64.b64decode(PNG_1PX)
    with pytest.raises(ValueError, match="drew 0 PNG"):
        build_html.gallery_figure(nb, "plot(b)")
    with pytest.raises(ValueError, match="2 code cells"):
        build_html.gallery_figure(nb, "plot(")


# ----------------------------------------------------------------------------- in Chromium
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    exe = require_browser()          # skip before spending a minute on the build
    given = os.environ.get("LDM_EDU_SITE_DIR")
    if given:
        path = Path(given).resolve()
        if not (path / "index.html").is_file():
            pytest.fail(f"LDM_EDU_SITE_DIR={given} has no index.html: run `make html` first")
        return path, exe
    tmp = tmp_path_factory.mktemp("site")
    t0 = time.perf_counter()
    build_html.build_site([ROOT / "lessons" / "01_autoencoder.ipynb"], tmp / "html", tmp / "work", preset="tiny")
    print(f"site for lesson 01 built in {time.perf_counter() - t0:.0f} s")
    return tmp / "html", exe


def _check_page(browser, url: str, shot: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, failed, errors = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=60_000)
    # wait for MathJax 2 (when the page has it) to finish typesetting
    page.wait_for_function("() => !window.MathJax || !MathJax.Hub || "
                           "(MathJax.Hub.queue && MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0)",
                           timeout=120_000)
    info = page.evaluate("""() => ({
        images: Array.from(document.images).map(i => ({src: i.src.slice(0, 80), ok: i.complete && i.naturalWidth > 0})),
        math: document.querySelectorAll('.MathJax_CHTML, .MathJax').length,
        mathErrors: Array.from(document.querySelectorAll('.mjx-merror, .MathJax_Error')).map(e => e.textContent.slice(0, 120)),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
        widgets: document.querySelectorAll('.ldm-static-widget').length,
        widgetImages: document.querySelectorAll('.ldm-static-widget img').length,
        mathjax: !!window.MathJax,
        // TeX left as source in the rendered markdown (MathJax moves what it typesets into scripts)
        rawTex: Array.from(document.querySelectorAll('.jp-MarkdownOutput, .jp-RenderedMarkdown'))
            .flatMap(e => e.innerText.match(/\\$[^$\\s][^$]{0,120}\\$/g) || []).slice(0, 5),
    })""")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot))
    page.close()
    info.update(requests=requests, failed=failed, errors=errors)
    return info


@pytest.mark.browser
def test_site_pages_render_offline_in_chromium(site):
    root, exe = site
    shots = ARTEFACTS / "site"
    index = root / "index.html"
    bundled_mathjax = (root / "_static" / "mathjax" / "MathJax.js").is_file()
    with chromium(exe) as browser:
        idx = _check_page(browser, index.as_uri(), shots / "index.png")
        lessons = [h for h in idx["links"] if h.endswith(".html") and "/" not in h]
        assert lessons, f"the index links no lesson page: {idx['links']}"
        assert lessons == sorted(lessons), f"lessons not in order on the index: {lessons}"
        pages = {"index.html": idx}
        for href in lessons:
            assert (root / href).is_file(), f"index links {href}, which was not written"
            pages[href] = _check_page(browser, (root / href).as_uri(), shots / (Path(href).stem + ".png"))

    assert idx["images"], "the index shows no lesson figure (build_html.GALLERY)"
    for name, info in pages.items():
        broken = [i["src"] for i in info["images"] if not i["ok"]]
        assert not broken, f"{name}: images that did not load: {broken}"
        outside = [u for u in info["requests"] if not is_local(u)]
        assert not outside, f"{name}: requests to other hosts (the site must read offline): {outside}"
        assert not info["failed"], f"{name}: failed requests: {info['failed']}"
        assert not info["errors"], f"{name}: JavaScript errors: {info['errors']}"
        assert not info["mathErrors"], f"{name}: TeX that MathJax could not typeset: {info['mathErrors']}"
        if name != "index.html":
            assert len(info["images"]) >= 3, f"{name}: only {len(info['images'])} figures"
            assert info["widgets"] >= 1 and info["widgetImages"] >= 1, \
                f"{name}: no widget shown in its rendered state ({info['widgets']} widgets, {info['widgetImages']} images)"
        if bundled_mathjax:
            assert info["mathjax"] and not info["rawTex"], f"{name}: formulas left as TeX source: {info['rawTex']}"
    if bundled_mathjax:
        assert sum(info["math"] for info in pages.values()) > 0, "MathJax bundled but no formula typeset on any page"
