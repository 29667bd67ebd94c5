"""The video job limit holds when uploads arrive together, across worker processes: a real
``python -m fer_core serve --workers 2`` on a loopback port and six concurrent HTTP uploads with
``FER_VIDEO_MAX_JOBS=1`` give one 202 and five 429s."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fer_core import synthetic
from fer_core.bench.api import _free_port, _multipart, _wait_ready
from tests.factories import ROOT


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synthetic.synthetic_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", seconds=1.0)


def _post_together(port: int, body: bytes, ctype: str, n: int) -> list[tuple[int, dict]]:
    """``n`` clients, connected first, send their uploads at the same moment."""
    start = threading.Barrier(n)
    out: list = [None] * n

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        start.wait()
        conn.request("POST", "/v1/videos", body, {"Content-Type": ctype})
        r = conn.getresponse()
        out[i] = (r.status, json.loads(r.read()))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _env_of(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("workers", [1, 2])
def test_six_uploads_at_once_with_a_limit_of_one(tmp_path, clip, workers):
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FER_VIDEO_MAX_JOBS": "1",
           "FER_VIDEO_DIR": str(tmp_path / "videos"), "FER_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "serve", "--port", str(port),
                             "--workers", str(workers), "--feedback-db",
                             str(tmp_path / "fb.sqlite3"), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc, 180)
        if workers > 1:  # one decoded-pixel budget for the server: a folder every worker uses
            shared = {_env_of(pid).get("FER_DECODE_BUDGET_DIR") for pid in _children(proc.pid)}
            assert len(shared) == 1 and None not in shared and Path(min(shared)).is_dir()
        body, ctype = _multipart("file", "talk.mp4", clip.read_bytes(), "video/mp4")
        answers = _post_together(port, body, ctype, 6)
        statuses = sorted(s for s, _ in answers)
        assert statuses == [202, 429, 429, 429, 429, 429], answers
        assert all(b["error"] == "too_many_jobs" for s, b in answers if s == 429)
        (vid,) = [b["id"] for s, b in answers if s == 202]
        # only the accepted job's folder is left: refused uploads freed their reservation
        assert sorted(p.name for p in (tmp_path / "videos").iterdir()
                      if not p.name.startswith(".")) == [vid]
        deadline = time.monotonic() + 180
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/v1/videos/{vid}")
            state = json.loads(conn.getresponse().read())
            conn.close()
            if state["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["status"] == "finished", state
        # the slot is free again: the next upload is accepted
        (again,) = _post_together(port, body, ctype, 1)
        assert again[0] == 202, again
    finally:
        proc.terminate()
        err = proc.communicate(timeout=30)[1].decode(errors="replace")
    assert "Traceback" not in err, err[-3000:]
    if workers > 1:
        assert not Path(min(shared)).exists()  # removed by serve when it ends
