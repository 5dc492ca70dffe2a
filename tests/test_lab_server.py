"""`make lab` really serves the lessons: start it on a free loopback port with a token, ask the
contents API for lessons/, check that a request without the token is refused, then stop it."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


@pytest.fixture
def lab_server(tmp_path):
    port, token = free_port(), "ldm-edu-test-token"
    flags = (f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
             f"--IdentityProvider.token={token} --ServerApp.runtime_dir={tmp_path}")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_FLAGS={flags}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                get(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
                    pytest.fail(f"jupyter lab did not start on port {port}:\n{out[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_lab_serves_lessons_and_requires_token(lab_server):
    base, token = lab_server
    status, listing = get(f"{base}/api/contents/lessons", token)
    names = {item["name"] for item in listing["content"]}
    expected = {p.name for p in (ROOT / "lessons").glob("*.ipynb")}
    assert status == 200 and expected and expected <= names
    status, nb = get(f"{base}/api/contents/lessons/{sorted(expected)[0]}", token)
    assert nb["type"] == "notebook" and nb["content"]["cells"]
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{base}/api/contents/lessons")
    assert e.value.code == 403
    # the lab page itself is served (the front end is installed in the venv)
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab?token={token}"), timeout=10) as r:
        assert r.status == 200 and b"JupyterLab" in r.read()
