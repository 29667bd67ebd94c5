"""A real ``serve`` process under hostile clients: hang-ups mid-body."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, free_port
from tests.test_api import tiny_model_dir

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


class Server:
    def __init__(self, tmp_path, log_level="info", env=None):
        model = tiny_model_dir(tmp_path / "tiny-run")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "serve", "--port", str(self.port), "--model",
             str(model), "--feedback-db", str(tmp_path / "fb.db"), "--log-level", log_level],
            cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                with urllib.request.urlopen(self.base + "/v1/health", timeout=5) as r:
                    assert json.loads(r.read())["model_loaded"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)

    def stop(self) -> str:
        """Stop the server and return what it logged after start-up."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err.split("Uvicorn running on", 1)[-1].split("\n", 1)[-1]


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def _hang_up(port, path, content_type, first_part: bytes, declared: int = 200_000):
    """Send headers announcing ``declared`` body bytes, send only ``first_part``, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + first_part)
        time.sleep(0.5)  # let the server start reading the body
    time.sleep(0.5)


MULTIPART_START = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\""
                   b"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n" + b"\0" * 2000)


@pytest.mark.parametrize("path, content_type, first_part", [
    ("/v1/predict", "application/json", b'{"image_base64": "' + b"A" * 3000),
    ("/v1/predict/batch", "multipart/form-data; boundary=xyz", MULTIPART_START),
    ("/v1/feedback", "application/json", b'{"label": "happy", "image_base64": "AAAA'),
])
def test_client_hanging_up_mid_body_is_one_quiet_log_line(server, path, content_type,
                                                          first_part):
    _hang_up(server.port, path, content_type, first_part)
    # the server is fine afterwards
    with urllib.request.urlopen(server.base + "/v1/health", timeout=5) as r:
        assert r.status == 200
    log = server.stop()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    lines = [ln for ln in log.splitlines() if path in ln and "GET /v1/health" not in ln]
    assert len(lines) == 1, log
    assert "disconnected" in lines[0], lines[0]
