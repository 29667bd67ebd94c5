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

from tests.factories import ROOT, end_process, free_port, wait_for_http


class Server:
    """``python -m fer_core serve`` on a free port; its stderr goes to ``tmp_path/serve.log``."""

    def __init__(self, tmp_path, model, log_level="info", env=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fer_core", "serve", "--port", str(self.port), "--model",
             str(model), "--feedback-db", str(tmp_path / "fb.db"), "--log-level", log_level],
            cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_for_http(self.base + "/v1/health", self.proc, log=self.log_path.read_text,
                      ready=lambda health: health["model_loaded"])
        self.started = self.log_path.stat().st_size

    def logged(self, since: int = 0) -> str:
        """What the server logged from byte ``since`` on (default: since start-up)."""
        with open(self.log_path, "rb") as f:
            f.seek(since or self.started)
            return f.read().decode(errors="replace")

    def stop(self) -> str:
        """Stop the server and return what it logged after start-up."""
        end_process(self.proc)
        self.log.close()
        return self.logged()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_run_dir):
    """One server for the hang-up cases (each reads only its own part of the log)."""
    s = Server(tmp_path_factory.mktemp("serve"), tiny_run_dir)
    yield s
    log = s.stop()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


def _hang_up(port, path, content_type, first_part: bytes, declared: int = 200_000):
    """Send headers announcing ``declared`` body bytes, send only ``first_part``, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + first_part)
        time.sleep(0.5)  # let the server start reading the body


MULTIPART_START = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\""
                   b"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n" + b"\0" * 2000)


@pytest.mark.parametrize("path, content_type, first_part", [
    ("/v1/predict", "application/json", b'{"image_base64": "' + b"A" * 3000),
    ("/v1/predict/batch", "multipart/form-data; boundary=xyz", MULTIPART_START),
    ("/v1/feedback", "application/json", b'{"label": "happy", "image_base64": "AAAA'),
])
def test_client_hanging_up_mid_body_is_one_quiet_log_line(server, path, content_type,
                                                          first_part):
    mark = server.log_path.stat().st_size
    _hang_up(server.port, path, content_type, first_part)
    # the server is fine afterwards
    with urllib.request.urlopen(server.base + "/v1/health", timeout=5) as r:
        assert r.status == 200
    deadline = time.monotonic() + 30    # the disconnect line may land after the health check
    while path not in server.logged(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.logged(mark)
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    lines = [ln for ln in log.splitlines() if path in ln and "GET /v1/health" not in ln]
    assert len(lines) == 1, log
    assert "disconnected" in lines[0], lines[0]


# ---- memory per request ---------------------------------------------------------------------

def _status_mb(pid: int, field: str) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def sixteen_bit_png(side=6300) -> bytes:
    """A 16-bit grey PNG of side x side pixels that compresses to ~90 KB."""
    import cv2
    import numpy as np
    img = np.full((side, side), 40_000, np.uint16)
    img[side // 3: side // 2, side // 3: side // 2] = 1_000
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def _post_batch(base: str, images: list[bytes], timeout=600) -> dict:
    boundary = "bIgBaTcH"
    parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
              f"filename=\"{i}.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + img + b"\r\n"
             for i, img in enumerate(images)]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/v1/predict/batch", data=body, method="POST",
                                 headers={"Content-Type":
                                          f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def peak_growth_mb(server: Server, images: list[bytes]) -> tuple[float, dict]:
    """(peak RSS of the server during the request minus its RSS before, in MB; the answer)."""
    pid = server.proc.pid
    before = _status_mb(pid, "VmRSS")
    answer = _post_batch(server.base, images)
    return _status_mb(pid, "VmHWM") - before, answer


@pytest.fixture(scope="module")
def big_pngs():
    one = sixteen_bit_png()
    assert len(one) < 150_000
    return [one] * 16


@pytest.mark.parametrize("request_pixels", [None, 10**9])
def test_batch_of_16_huge_16bit_pngs_adds_under_1_gb(tmp_path, tiny_run_dir, big_pngs,
                                                     request_pixels):
    env = {"FER_MAX_REQUEST_PIXELS": str(request_pixels)} if request_pixels else {}
    server = Server(tmp_path, tiny_run_dir, log_level="warning", env=env)
    try:
        growth, answer = peak_growth_mb(server, big_pngs)
    finally:
        server.stop()
    print(f"peak RSS growth {growth:.0f} MB (FER_MAX_REQUEST_PIXELS={request_pixels})")
    results = answer["results"]
    assert len(results) == 16
    decoded = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    if request_pixels is None:  # 160 million pixels per request: four 6300x6300 images
        assert len(decoded) == 4 and len(refused) == 12
        assert all(r["error"] == "too_many_pixels" and "per-request" in r["detail"]
                   for r in refused), refused[0]
    else:
        assert len(decoded) == 16, refused[:1]
    assert growth < 1024, f"the batch grew the server by {growth:.0f} MB"
