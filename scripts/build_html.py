"""Build the course as a static website: execute every lesson, export it to HTML, write an index.

    python scripts/build_html.py                          # every lesson → build/html/   (make html)
    python scripts/build_html.py lessons/01_autoencoder.ipynb --out /tmp/site

The lessons run with nbclient in a scratch folder (``--workdir``, default ``build/html-work/``), in
order, so checkpoints one lesson saves for the next (01 → 02, 04 → 05) land there and never in
``lessons/checkpoints``. The preset is ``--preset``, else ``$LDM_EDU_PRESET``, else ``tiny`` (``make
html`` passes ``pretrained``: the shipped weights replayed). The index shows one figure per lesson
(``GALLERY``), written to ``gallery/`` beside it; ``make gallery`` copies them to docs/img/ for README.

What the site holds, and why it reads offline (no request leaves the machine):
* figures are embedded in the pages (data URIs), as nbconvert writes them;
* widgets are shown in the state the run left them in: every widget view is replaced by a static
  HTML copy of its widget tree (the controls with their values, drawn disabled, and the figures the
  widget's Output holds). nbconvert's own widget rendering would load the widget manager and
  require.js from a CDN; it is not used, and the widget state is not kept in the page;
* math is typeset by a local copy of MathJax 2 in ``_static/mathjax/`` (Debian's ``libjs-mathjax``,
  ``apt-get install libjs-mathjax``, or the ``jupyter_server_mathjax`` Python package, whichever is
  found; ``$LDM_EDU_MATHJAX_DIR`` names another copy). Without one the pages still build and show the
  LaTeX source of the formulas, and the script says so.
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX_CONFIG = "TeX-AMS_CHTML-full"
# what MathJax 2 needs for TeX input and CommonHTML output (about 1.5 MB of its 50)
MATHJAX_PARTS = ["MathJax.js", f"config/{MATHJAX_CONFIG}.js", "config/Safe.js", "extensions",
                 "jax/input/TeX", "jax/output/CommonHTML", "jax/element", "fonts/HTML-CSS/TeX/woff"]


# One figure per lesson: shown on the index page and copied to docs/img/ for README's gallery
# (`make gallery`). Each is the n-th PNG that the code cell whose source contains the text draws.
GALLERY = {
    "01": ("test digits at z = E(x)", 0, "the 2-D latent space of an autoencoder"),
    "02": ("viz.latent_grid_figure(decode_all(vae2", 0, "a VAE's decoded latent manifold"),
    "03": ("samples.cpu().view(10, 4", 0, "VQ-VAE tokens sampled from a small transformer prior"),
    "04": ("viz.show_grid(main_row.images[:100]", 1, "DDPM samples, ancestral sampler"),
    "05": ('ax.set_xscale("log")', 0, "FID-MNIST and time against sampling steps"),
    "06": ("finals[side, m, k]", 0, "pixel DDPM and latent diffusion, the final models"),
    "07": ("LDM samples on each first stage", 0, "an LDM on each of the paper's first stages"),
}


@dataclass
class Page:
    source: Path        # the lesson notebook
    href: str           # its page, relative to the site root
    title: str
    summary_md: str     # the lesson's first paragraph (markdown)
    seconds: float      # how long executing it took
    n_figures: int
    n_widgets: int
    thumb: str = ""     # its gallery figure, relative to the site root ("" when it has none)
    caption: str = ""


# ----------------------------------------------------------------------------- execution
def execute(path: Path, workdir: Path, env: dict, timeout: int = 3600) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell of ``path`` in a kernel with environment ``env`` and working directory
    ``workdir``; keep the widget state."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(workdir)}})
    t0 = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - t0


def kernel_environment(preset: str | None) -> dict:
    """This process's environment with the preset, no progress bars and inline figures."""
    env = dict(os.environ)
    env["LDM_EDU_PRESET"] = preset or env.get("LDM_EDU_PRESET") or "tiny"
    env.setdefault("TQDM_DISABLE", "1")
    # `make test` sets MPLBACKEND=Agg for nbval; with it the kernel would draw no inline figures
    env.pop("MPLBACKEND", None)
    return env


# ----------------------------------------------------------------------------- widgets, statically
def _img(data: str, mime: str) -> str:
    return f'<img src="data:{mime};base64,{data.strip()}" alt="figure">'


def _output_html(out: dict, state: dict, depth: int) -> str:
    """One output (as a widget's Output holds it, or a cell's) as HTML."""
    if out.get("output_type") == "stream":
        return f'<pre class="ldm-static-stream">{html.escape(out.get("text", ""))}</pre>'
    if out.get("output_type") == "error":
        return f'<pre class="ldm-static-error">{html.escape(out.get("ename", ""))}: {html.escape(out.get("evalue", ""))}</pre>'
    data = out.get("data", {})
    if WIDGET_VIEW in data:
        return widget_html(data[WIDGET_VIEW].get("model_id", ""), state, depth + 1)
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            return _img(data[mime], mime)
    if "image/svg+xml" in data:
        svg = data["image/svg+xml"]
        svg = "".join(svg) if isinstance(svg, list) else svg
        return _img(base64.b64encode(svg.encode()).decode(), "image/svg+xml")
    if "text/html" in data:
        return "".join(data["text/html"]) if isinstance(data["text/html"], list) else data["text/html"]
    if "text/markdown" in data:
        from nbconvert.filters import markdown2html
        md = data["text/markdown"]
        return markdown2html("".join(md) if isinstance(md, list) else md)
    if "text/plain" in data:
        return f"<pre>{html.escape(str(data['text/plain']))}</pre>"
    return ""


def _label(s: dict) -> str:
    d = s.get("description") or ""
    return f'<span class="ldm-static-label">{html.escape(d)}</span>' if d else ""


def widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    """A static HTML copy of the widget ``model_id`` (and its children) from nbclient's widget state.

    Controls are drawn disabled with the value they had when the lesson finished; an Output shows
    the outputs it held (the figure the last callback drew). Unknown widgets show their description
    and value, so nothing vanishes silently.
    """
    entry = state.get(model_id)
    if entry is None or depth > 20:
        return '<div class="ldm-static-missing">(widget not saved)</div>'
    name, s = entry.get("model_name", ""), entry.get("state", {})
    children = [c.removeprefix("IPY_MODEL_") for c in s.get("children", [])]
    if name in ("VBoxModel", "BoxModel", "HBoxModel", "GridBoxModel", "AccordionModel", "TabModel",
                "StackModel"):
        cls = "ldm-static-hbox" if name == "HBoxModel" else "ldm-static-vbox"
        inner = "".join(widget_html(c, state, depth + 1) for c in children)
        return f'<div class="{cls}">{inner}</div>'
    if name == "OutputModel":
        inner = "".join(_output_html(o, state, depth) for o in s.get("outputs", []))
        return f'<div class="ldm-static-output">{inner}</div>'
    if name in ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel"):
        v, lo, hi = s.get("value", 0), s.get("min", 0), s.get("max", 100)
        shown = f"{v:g}" if isinstance(v, (int, float)) else html.escape(str(v))
        return (f'<div class="ldm-static-control">{_label(s)}<input type="range" disabled min="{lo}" '
                f'max="{hi}" step="any" value="{v}"><span class="ldm-static-readout">{shown}</span></div>')
    if name in ("SelectionSliderModel",):
        labels, i = s.get("_options_labels", []), s.get("index", 0)
        shown = html.escape(str(labels[i])) if labels and i is not None and i < len(labels) else ""
        return (f'<div class="ldm-static-control">{_label(s)}<input type="range" disabled min="0" '
                f'max="{max(len(labels) - 1, 0)}" value="{i or 0}"><span class="ldm-static-readout">'
                f'{shown}</span></div>')
    if name in ("DropdownModel", "RadioButtonsModel", "ToggleButtonsModel", "SelectModel"):
        labels, i = s.get("_options_labels", []), s.get("index")
        shown = html.escape(str(labels[i])) if labels and i is not None and i < len(labels) else ""
        return f'<div class="ldm-static-control">{_label(s)}<span class="ldm-static-readout">{shown}</span></div>'
    if name in ("LabelModel", "HTMLMathModel"):
        return f'<span class="ldm-static-text">{html.escape(str(s.get("value", "")))}</span>'
    if name == "HTMLModel":
        return f'<div class="ldm-static-text">{s.get("value", "")}</div>'
    if name in ("CheckboxModel", "ToggleButtonModel"):
        checked = " checked" if s.get("value") else ""
        return f'<div class="ldm-static-control">{_label(s)}<input type="checkbox" disabled{checked}></div>'
    if name == "ButtonModel":
        return f'<button disabled>{html.escape(s.get("description", ""))}</button>'
    if name == "ImageModel":
        return '<div class="ldm-static-missing">(image widget)</div>'
    if children:
        return "".join(widget_html(c, state, depth + 1) for c in children)
    value = s.get("value")
    text = f"{s.get('description', '')} {'' if value is None else value}".strip() or name
    return f'<span class="ldm-static-text">{html.escape(text)}</span>'


def staticize_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace every widget view in ``nb`` by its static HTML copy; drop the widget state. Returns
    how many views were replaced."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                model_id = data[WIDGET_VIEW].get("model_id", "")
                out["data"] = {"text/html": f'<div class="ldm-static-widget">{widget_html(model_id, state)}</div>',
                               "text/plain": "(widget; shown in the state the lesson left it in)"}
                n += 1
    nb.metadata.pop("widgets", None)
    return n


# ----------------------------------------------------------------------------- HTML
SITE_CSS = """
.ldm-nav { display: flex; justify-content: space-between; gap: 1em; max-width: 1100px; margin: 0.5em auto;
  padding: 0.5em 1em; font-family: var(--jp-ui-font-family, sans-serif); font-size: 14px;
  border-bottom: 1px solid #ddd; }
.ldm-nav a { text-decoration: none; }
.ldm-static-widget { border-left: 3px solid #9ac; padding: 4px 8px; margin: 4px 0; }
.ldm-static-hbox { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
.ldm-static-vbox { display: flex; flex-direction: column; gap: 4px; }
.ldm-static-control { display: flex; align-items: center; gap: 6px; font-size: 13px; }
.ldm-static-label { min-width: 3em; text-align: right; }
.ldm-static-readout { font-family: var(--jp-code-font-family, monospace); }
.ldm-static-note { font-size: 12px; color: #667; margin: 2px 0 4px; }
.ldm-static-error { color: #a00; }
"""

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{#- no require.js: the site loads nothing from other hosts (widgets are static HTML) -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.ldm_mathjax_url -%}{{ mathjax(resources.ldm_mathjax_url) }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{% block extra_css %}<style type="text/css">{{ resources.ldm_css }}</style>{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
<nav class="ldm-nav">{{ resources.ldm_nav }}</nav>
{%- endblock body_header -%}
{% block body_footer %}
<nav class="ldm-nav">{{ resources.ldm_nav }}</nav>
{{ super() }}
{% endblock body_footer %}
"""


def exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    return HTMLExporter(extra_loaders=[DictLoader({"ldm_site.html.j2": TEMPLATE})],
                        template_file="ldm_site.html.j2")


def find_mathjax() -> Path | None:
    candidates = [os.environ.get("LDM_EDU_MATHJAX_DIR"), "/usr/share/javascript/mathjax"]
    try:
        import jupyter_server_mathjax
        candidates.append(str(Path(jupyter_server_mathjax.__file__).parent / "static"))
    except ImportError:
        pass
    for c in candidates:
        if c and (Path(c) / "MathJax.js").is_file() and (Path(c) / "config" / f"{MATHJAX_CONFIG}.js").is_file():
            return Path(c)
    return None


def copy_mathjax(out: Path) -> str | None:
    """Copy what MathJax 2 needs into ``out/_static/mathjax``; return the script's relative URL."""
    src = find_mathjax()
    if src is None:
        print("build_html: no local MathJax 2 found (apt-get install libjs-mathjax): formulas will show "
              "as LaTeX source", file=sys.stderr)
        return None
    dst = out / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        s, d = src / part, dst / part
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    return f"_static/mathjax/MathJax.js?config={MATHJAX_CONFIG},Safe"


def lesson_title(nb) -> tuple[str, str]:
    """The first ``# `` heading of the first markdown cell, and the paragraph after it."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        title = next((l[2:].strip() for l in lines if l.startswith("# ")), None)
        if title is None:
            continue
        body = cell.source.split("\n", lines.index("# " + title) + 1)[-1].strip() if ("# " + title) in lines else ""
        summary = body.split("\n\n")[0] if body else ""
        return title, summary
    return "", ""


def gallery_figure(nb, contains: str, nth: int = 0) -> bytes:
    """The ``nth`` PNG drawn by the code cell whose source contains ``contains`` (exactly one cell)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and contains in "".join(c.source)]
    if len(cells) != 1:
        raise ValueError(f"GALLERY: {len(cells)} code cells contain {contains!r}; it must name exactly one")
    pngs = [o["data"]["image/png"] for o in cells[0].get("outputs", []) if "image/png" in o.get("data", {})]
    if len(pngs) <= nth:
        raise ValueError(f"GALLERY: the cell containing {contains!r} drew {len(pngs)} PNG figures, not {nth + 1}")
    return base64.b64decode(pngs[nth])


def count_figures(nb) -> int:
    """Image outputs, including those inside (static copies of) widgets."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            n += sum(1 for m in data if m.startswith("image/"))
            n += str(data.get("text/html", "")).count('<img src="data:image/')
    return n


def page_nav(pages: list[Page], i: int) -> str:
    prev = f'<a href="{pages[i - 1].href}">← {html.escape(pages[i - 1].title)}</a>' if i > 0 else "<span></span>"
    nxt = f'<a href="{pages[i + 1].href}">{html.escape(pages[i + 1].title)} →</a>' if i + 1 < len(pages) else "<span></span>"
    return f'{prev}<a href="index.html">contents</a>{nxt}'


def write_index(pages: list[Page], out: Path, preset: str, mathjax_url: str | None) -> Path:
    from nbconvert.filters import markdown2html
    items = "\n".join(
        f'<li><h2><a href="{p.href}">{html.escape(p.title)}</a></h2>'
        + (f'<a href="{p.href}"><img class="thumb" src="{p.thumb}" alt="{html.escape(p.caption)}" '
           f'title="{html.escape(p.caption)}"></a>' if p.thumb else "")
        + f'<div class="summary">{markdown2html(p.summary_md)}</div>'
        f'<p class="meta">{p.n_figures} figures, {p.n_widgets} widgets · executed in {p.seconds:.0f} s on the machine that built this site</p></li>'
        for p in pages)
    mathjax = ""
    if mathjax_url:
        mathjax = (f'<script src="{mathjax_url}"></script><script type="text/x-mathjax-config">'
                   'MathJax.Hub.Config({tex2jax: {inlineMath: [["$","$"], ["\\\\(","\\\\)"]], processEscapes: true},'
                   ' messageStyle: "none"});</script>')
    index = out / "index.html"
    index.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ldm_edu — latent diffusion, from the autoencoder up</title>{mathjax}
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }}
ol.lessons {{ padding-left: 1.5em; }} ol.lessons li {{ margin-bottom: 1.5em; }}
ol.lessons h2 {{ font-size: 1.2em; margin: 0 0 0.3em; }} .meta {{ color: #667; font-size: 0.9em; margin: 0.2em 0; }}
.summary p {{ margin: 0.2em 0; }}
img.thumb {{ float: right; width: 220px; margin: 0 0 0.5em 1em; border: 1px solid #ddd; }}
ol.lessons li {{ clear: both; overflow: auto; }}
</style></head>
<body>
<h1>ldm_edu — latent diffusion, from the autoencoder up</h1>
<p>The lessons in order, each executed end to end in the <code>{html.escape(preset)}</code> preset on
{time.strftime('%Y-%m-%d')}. Figures and widgets show what that run produced; widgets are drawn in the
state the lesson left them in (open the notebook in JupyterLab to move them).</p>
<ol class="lessons">
{items}
</ol>
</body></html>
""", encoding="utf-8")
    return index


def build_site(lessons: list[Path], out: Path, workdir: Path, preset: str | None = None,
               timeout: int = 3600) -> list[Page]:
    """Execute ``lessons`` in order (kernel cwd ``workdir``) and write the site to ``out``."""
    env = kernel_environment(preset)
    preset = env["LDM_EDU_PRESET"]
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    mathjax_url = copy_mathjax(out)
    executed, pages = [], []
    for path in lessons:
        print(f"build_html: executing {path.name} (preset {preset}) ...", flush=True)
        try:
            nb, seconds = execute(path, workdir, env, timeout)
        except Exception as e:   # nbclient's CellExecutionError carries the cell and its traceback
            raise RuntimeError(f"{path.name} failed in the {preset} preset, so the site was not written:\n{e}") from e
        thumb, caption = "", ""
        if path.stem[:2] in GALLERY:
            contains, nth, caption = GALLERY[path.stem[:2]]
            (out / "gallery").mkdir(exist_ok=True)
            thumb = f"gallery/lesson{path.stem[:2]}.png"
            (out / thumb).write_bytes(gallery_figure(nb, contains, nth))
        n_widgets = staticize_widgets(nb)
        title, summary = lesson_title(nb)
        pages.append(Page(path, path.stem + ".html", title or path.stem, summary, seconds,
                          count_figures(nb), n_widgets, thumb, caption))
        executed.append(nb)
        print(f"build_html:   {seconds:.0f} s, {pages[-1].n_figures} figures, {n_widgets} widgets", flush=True)
    exp = exporter()
    for i, (page, nb) in enumerate(zip(pages, executed)):
        resources = {"metadata": {"name": page.title}, "ldm_css": SITE_CSS, "ldm_nav": page_nav(pages, i),
                     "ldm_mathjax_url": mathjax_url}
        body, _ = exp.from_notebook_node(nb, resources=resources)
        (out / page.href).write_text(body, encoding="utf-8")
    index = write_index(pages, out, preset, mathjax_url)
    print(f"build_html: wrote {index} and {len(pages)} lesson pages", flush=True)
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lessons", nargs="*", type=Path,
                    help="notebooks, in site order (default: lessons/[0-9][0-9]_*.ipynb)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "html")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "html-work",
                    help="the kernels' working directory (checkpoints land here)")
    ap.add_argument("--preset", default=None, help="default: $LDM_EDU_PRESET, else tiny (make html: pretrained)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    lessons = args.lessons or sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in lessons if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    try:
        build_site([p.resolve() for p in lessons], args.out.resolve(), args.workdir.resolve(), args.preset,
                   args.timeout)
    except RuntimeError as e:
        print(f"build_html: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
