"""Shared by tests/test_browser.py and tests/test_site.py: find Debian's Chromium and Playwright, or
skip with a reason that says how to get them (``make test-browser`` installs both when run as root).

``LDM_EDU_REQUIRE_BROWSER=1`` (CI sets it) turns the skip into a failure, so a CI machine that lost
its browser cannot pass without running the browser tests.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "build"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_executable() -> str | None:
    """``$LDM_EDU_CHROMIUM``, else Debian's ``chromium`` (or ``chromium-browser``) on PATH."""
    env = os.environ.get("LDM_EDU_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _skip(reason: str):
    if os.environ.get("LDM_EDU_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LDM_EDU_REQUIRE_BROWSER=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def require_browser() -> str:
    """The Chromium executable; skips (visibly) when Chromium or Playwright is missing."""
    exe = chromium_executable()
    if exe is None:
        _skip("no Chromium: install Debian's `chromium` (as root, `make test-browser` does it) "
              "or point LDM_EDU_CHROMIUM at a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip("Playwright is not installed: pip install -e '.[browser]' (or `make test-browser`)")
    return exe


@contextmanager
def chromium(exe: str):
    """A headless Chromium driven by Playwright on ``exe`` (never a browser Playwright downloads)."""
    from playwright.sync_api import sync_playwright

    args = ["--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")          # Chromium's sandbox refuses to run as root
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def is_local(url: str) -> bool:
    """Requests a page may make offline: its own files, inline data, and the loopback server."""
    from urllib.parse import urlsplit
    u = urlsplit(url)
    return u.scheme in ("file", "data", "blob", "about") or u.hostname in ("127.0.0.1", "localhost", "::1")


@contextmanager
def running_server(cmd: list, probe, startup_s: float, log_text, **popen):
    """Start ``cmd`` in its own process group, wait until ``probe()`` stops raising a connection error
    (failing the test with the end of ``log_text()`` if the process exits or ``startup_s`` passes),
    yield the process, and always stop the whole group (SIGTERM, then SIGKILL after 30 s)."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    try:
        deadline = time.time() + startup_s
        while True:
            try:
                probe()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"{' '.join(map(str, cmd[:3]))} did not start:\n{log_text(proc)[-3000:]}")
                time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
