"""Every lesson, the way a student meets it: JupyterLab in a real (headless) Chromium.

A JupyterLab server (token auth, free loopback port) serves a temporary copy of lessons/, so the
checkpoints the lessons save (``checkpoints/`` beside the notebook: 01 → 02, 04 → 05) land in the
copy and never in lessons/checkpoints. The lessons run in order in the ``tiny`` preset. For each one:
open it, Run → Run All Cells, wait until no prompt shows ``[*]``, save it and read it back through
the contents API (every code cell executed, no error output), then move one control of every
widget that draws a figure (a slider with the keyboard: focus the handle, ArrowRight, ArrowLeft
when it is at its end; else a dropdown: the next option) and assert that the image in the
widget's output changed (its PNG data; screenshots of the output before and after are kept) and
that the callback printed no error. Screenshots and
the executed notebooks are kept in build/browser/<lesson>/, timings in build/browser/timings.json.

Needs Debian's Chromium and Playwright (`make test-browser` installs both as root); skips with the
reason otherwise. ``LDM_EDU_BROWSER_TIMEOUT`` (seconds per lesson, default 900) bounds the run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_support import ARTEFACTS, ROOT, chromium, free_port, require_browser, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
TOKEN = "ldm-edu-browser-test"
LESSON_TIMEOUT = float(os.environ.get("LDM_EDU_BROWSER_TIMEOUT", "900"))
SHOTS = ARTEFACTS / "browser"
# printed by ldm_edu.widgets.interactive_figure when a callback raises
WIDGET_ERROR = re.compile(r"^\s*\w+(Error|Exception|Interrupt)\b.*:.*$", re.M)

# JupyterLab settings for the test profile: keep every cell in the DOM (no windowing), no news
# or update pop-ups over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def _api(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def browser_exe():
    return require_browser()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser_exe):
    """JupyterLab on 127.0.0.1:<free port> over a copy of lessons/; yields (base URL, root folder, pid)."""
    root = tmp_path_factory.mktemp("lab")
    (root / "lessons").mkdir()
    for nb in LESSONS:
        shutil.copy2(nb, root / "lessons" / nb.name)
    settings = root / "settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port = free_port()
    env = dict(os.environ, LDM_EDU_PRESET="tiny", TQDM_DISABLE="1",
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    env.pop("MPLBACKEND", None)   # `make test` sets Agg for nbval; kernels here must draw inline figures
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    base = f"http://127.0.0.1:{port}"
    log = open(root / "lab.log", "wb")
    try:
        with running_server(cmd, lambda: _api(base, "/api/status"), 120,
                            lambda proc: (root / "lab.log").read_text(errors="replace"),
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT) as proc:
            yield base, root, proc.pid
    finally:
        log.close()
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "lab.log", SHOTS / "lab.log")


@pytest.fixture(scope="module")
def browser(browser_exe):
    with chromium(browser_exe) as b:
        yield b


@pytest.fixture(scope="module")
def timings():
    t = {}
    yield t
    if t:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "timings.json").write_text(json.dumps(t, indent=1))
        print("\nbrowser test, seconds per lesson: " + ", ".join(f"{k} {v['total']:.0f}" for k, v in t.items()))


def _menu(page, menu: str, item: str):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{menu}$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{item}$")).first.click()


PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt'))
                 .map(e => e.textContent.trim())"""
READY_JS = """n => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (!panel) return false;
    const kernel = panel.querySelector('.jp-KernelName');
    const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    return panel.querySelectorAll('.jp-Notebook .jp-CodeCell').length === n
        && kernel && !/No Kernel/.test(kernel.textContent)
        && status && status.getAttribute('data-status') === 'idle';
}"""
DIALOG_JS = """() => Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText.slice(0, 400))"""


def _run_all(page, name: str, shot_dir: Path) -> None:
    """Run → Run All Cells; return when no cell is queued or running, fail on timeout or a dialog."""
    _menu(page, "Run", "Run All Cells")
    start, deadline = time.time(), time.time() + LESSON_TIMEOUT
    started = False
    while True:
        prompts = page.evaluate(PROMPTS_JS)
        busy = sum(p.startswith("[*]") for p in prompts)
        started = started or busy > 0
        done = sum(bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts)
        if (started and busy == 0) or (done == len(prompts) > 0):
            return
        if not started and time.time() - start > 60:
            pytest.fail(f"{name}: Run All Cells started no cell within 60 s (prompts {prompts[:5]}…)")
        dialogs = page.evaluate(DIALOG_JS)
        if dialogs:   # e.g. "Kernel Restarting: the kernel appears to have died"
            page.screenshot(path=str(shot_dir / "dialog.png"))
            pytest.fail(f"{name}: JupyterLab showed a dialog while running: {dialogs}")
        if time.time() > deadline:
            page.screenshot(path=str(shot_dir / "timeout.png"))
            pytest.fail(f"{name}: still running after {LESSON_TIMEOUT:.0f} s ({busy} cells queued or running; "
                        "raise LDM_EDU_BROWSER_TIMEOUT on a slow machine)")
        time.sleep(1.0)


def _save_and_read(page, base: str, rel: str) -> dict:
    """File → Save Notebook, then the notebook as the server stored it."""
    before = _api(base, f"/api/contents/{rel}?content=0")["last_modified"]
    _menu(page, "File", "Save Notebook")
    deadline = time.time() + 60
    while time.time() < deadline:
        model = _api(base, f"/api/contents/{rel}?content=0")
        if model["last_modified"] != before:
            return _api(base, f"/api/contents/{rel}")["content"]
        time.sleep(0.5)
    pytest.fail(f"{rel}: saving the executed notebook did not finish in 60 s")


IMAGES_JS = """e => { const imgs = Array.from(e.querySelectorAll('img'));
    return imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.src) : null; }"""


def _images(out, timeout: float, differ_from: list | None = None) -> list | None:
    """The srcs of the images in ``out`` once all have loaded and at least one is there (and, if
    given, the list differs from ``differ_from``), read twice 0.5 s apart and equal; None on timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        srcs = out.evaluate(IMAGES_JS)
        if srcs and srcs == last and srcs != differ_from:
            return srcs
        last = srcs
        time.sleep(0.5)
    return None


def _mark_widgets(page) -> list[dict]:
    """Tag every widget Output that shares a box with a slider (or, failing one, a dropdown);
    return each one's index, control kind and description."""
    return page.evaluate("""() => {
        const found = [];
        document.querySelectorAll('.jp-Notebook .widget-output').forEach(out => {
            const box = out.parentElement;
            if (!box) return;
            const control = box.querySelector('.widget-slider') || box.querySelector('.widget-dropdown');
            if (!control) return;
            const i = found.length;
            out.setAttribute('data-ldm-out', i);
            control.setAttribute('data-ldm-control', i);
            const label = control.querySelector('.widget-label');
            found.push({index: i, kind: control.classList.contains('widget-slider') ? 'slider' : 'dropdown',
                        label: label ? label.textContent : ''});
        });
        return found;
    }""")


def _move_widget(page, w: dict, shot_dir: Path) -> dict:
    """Move control ``w`` one step as a student would (a slider: focus its handle, ArrowRight, or
    ArrowLeft at its end; a dropdown: pick the next option) and report whether the image in its
    Output changed."""
    i = w["index"]
    out = page.locator(f'[data-ldm-out="{i}"]')
    control = page.locator(f'[data-ldm-control="{i}"]')
    out.scroll_into_view_if_needed()
    before = _images(out, timeout=60.0)
    out.screenshot(path=str(shot_dir / f"widget{i}_before.png"))
    if w["kind"] == "slider":
        readout = control.locator(".widget-readout").first
        value = readout.inner_text
        value0 = value()
        control.locator(".noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        time.sleep(0.3)
        if value() == value0:                    # at its maximum: step down instead
            page.keyboard.press("ArrowLeft")
            time.sleep(0.3)
    else:
        select = control.locator("select").first
        value = lambda: select.evaluate("e => e.options[e.selectedIndex] ? e.options[e.selectedIndex].text : ''")
        value0 = value()
        k, n = select.evaluate("e => [e.selectedIndex, e.options.length]")
        select.select_option(index=k + 1 if k + 1 < n else max(k - 1, 0))
        time.sleep(0.3)
    value1 = value()
    t0 = time.time()
    # a control that did not move gets 5 s (its figure cannot change); a moved one 120 s to redraw
    after = _images(out, timeout=120.0 if value1 != value0 else 5.0, differ_from=before) if before else None
    seconds = time.time() - t0
    out.screenshot(path=str(shot_dir / f"widget{i}_after.png"))
    error = WIDGET_ERROR.search(out.inner_text())
    return {"kind": w["kind"], "from": value0, "to": value1, "had_image": bool(before),
            "changed": after is not None, "seconds": round(seconds, 1), "error": error.group(0) if error else None}


def _kernel_cpu(server_pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by the server's kernels: a measure of a
    lesson's work that a busy machine inflates far less than wall time."""
    try:
        import psutil
        kids = psutil.Process(server_pid).children(recursive=True)
        return round(sum(sum(k.cpu_times()[:2]) for k in kids if "ipykernel" in " ".join(k.cmdline())), 1)
    except Exception:
        return None


def _error_outputs(nb: dict) -> list[str]:
    errors = []
    for k, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out.get("output_type") == "error":
                errors.append(f"cell {k}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and "Traceback (most recent call last)" in out.get("text", ""):
                errors.append(f"cell {k}: traceback printed to {out.get('name')}: {out['text'][-300:]}")
    return errors


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_jupyterlab_and_widgets_respond(lab, browser, timings, lesson):
    base, lab_root, server_pid = lab
    name, rel = lesson.stem, f"lessons/{lesson.name}"
    shot_dir = SHOTS / name
    shutil.rmtree(shot_dir, ignore_errors=True)
    shot_dir.mkdir(parents=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    js_errors = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    t0 = time.time()
    try:
        page.goto(f"{base}/lab/tree/{rel}?reset&token={TOKEN}", timeout=120_000)
        # ready: every code cell of the file is on the page, and a kernel is started and idle
        served = json.loads((lab_root / rel).read_text(encoding="utf-8"))     # the copy, as served
        n_code = sum(c["cell_type"] == "code" for c in served["cells"])
        try:
            page.wait_for_function(READY_JS, arg=n_code, timeout=180_000)
        except Exception:
            page.screenshot(path=str(shot_dir / "not_ready.png"))
            pytest.fail(f"{name}: the notebook or its kernel was not ready after 180 s "
                        f"(dialogs: {page.evaluate(DIALOG_JS)}); see {shot_dir / 'not_ready.png'}")
        t_open = time.time() - t0
        _run_all(page, name, shot_dir)
        t_run = time.time() - t0 - t_open
        page.screenshot(path=str(shot_dir / "after_run_all.png"))
        nb = _save_and_read(page, base, rel)
        (shot_dir / lesson.name).write_text(json.dumps(nb, ensure_ascii=False))

        problems = _error_outputs(nb)
        unrun = [k for k, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and c.get("execution_count") is None]
        if unrun:
            problems.append(f"code cells not executed by Run All: {unrun}")

        # the widgets that ran, even after an error above: one report says all that is wrong
        widgets = _mark_widgets(page)
        if not widgets:
            problems.append("no widget with a slider or dropdown and an output to move (every lesson should have one)")
        moved = {}
        for w in widgets:
            r = _move_widget(page, w, shot_dir)
            moved[f"{w['index']}:{w['label']}"] = r
            if not r["had_image"]:
                problems.append(f"widget {w['index']} ({w['label']}): its output shows no image")
            elif r["from"] == r["to"]:
                problems.append(f"widget {w['index']} ({w['label']}): the {w['kind']} did not move")
            elif not r["changed"]:
                problems.append(f"widget {w['index']} ({w['label']}: {r['from']} → {r['to']}): output did not change")
            if r["error"]:
                problems.append(f"widget {w['index']} ({w['label']}): the callback printed {r['error']!r}")
        page.screenshot(path=str(shot_dir / "after_widgets.png"))
        (shot_dir / "widgets.json").write_text(json.dumps(moved, indent=1, ensure_ascii=False))
        timings[name] = {"open": round(t_open, 1), "run_all": round(t_run, 1), "kernel_cpu_s": _kernel_cpu(server_pid),
                         "widgets": round(sum(v["seconds"] for v in moved.values()), 1),
                         "total": round(time.time() - t0, 1), "n_widgets": len(moved)}
        assert not problems, f"{name} in JupyterLab:\n  " + "\n  ".join(problems)
    finally:
        (shot_dir / "js_errors.txt").write_text("\n".join(js_errors))
        page.close()
        for s in _api(base, "/api/sessions") or []:       # free the kernel's memory before the next lesson
            if s.get("path") == rel:
                _api(base, f"/api/sessions/{s['id']}", method="DELETE")
