"""``python -m fer_core serve`` really serves the API over loopback (uvicorn subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np

from tests.factories import ROOT, free_port


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, json.loads(r.read())


def test_serve_command_answers_over_http(tmp_path, tiny_run_dir):
    model = tiny_run_dir
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FER_API_KEY": "k"}
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "serve", "--port", str(port),
                             "--model", str(model), "--feedback-db", str(tmp_path / "fb.db"),
                             "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                status, health = _get(base + "/v1/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert status == 200 and health["model_loaded"] and health["model_id"]
        png = cv2.imencode(".png", np.full((48, 48), 120, np.uint8))[1].tobytes()
        import base64
        req = urllib.request.Request(
            base + "/v1/predict?detect=false", method="POST",
            data=json.dumps({"image_base64": base64.b64encode(png).decode()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        assert len(body["faces"]) == 1 and body["model_id"] == health["model_id"]
        # the API key from the environment is enforced
        try:
            urllib.request.urlopen(base + "/v1/feedback/export", timeout=5)
            raise AssertionError("export without key should be refused")
        except urllib.error.HTTPError as e:
            assert e.code == 401 and json.loads(e.read())["error"] == "unauthorized"
        assert _get(base + "/openapi.json")[1]["info"]["title"] == "FER Studio API"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_rejects_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "fer_core", "serve", "--port", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--port" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "fer_core", "serve"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "FER_MAX_UPLOAD_MB": "many"})
    assert r.returncode == 2 and "FER_MAX_UPLOAD_MB" in r.stderr
