"""`make lab` really serves the lessons: start it on a free loopback port with a token, ask the
contents API for lessons/, check that a request without the token is refused, then stop it."""
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from browser_support import ROOT, free_port, running_server


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
    base = f"http://127.0.0.1:{port}"
    with running_server(["make", "-s", "lab", f"LAB_FLAGS={flags}"], lambda: get(f"{base}/api/status", token), 90,
                        lambda proc: proc.stdout.read().decode(errors="replace") if proc.poll() is not None else "",
                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT):
        yield base, token


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
