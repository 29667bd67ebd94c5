"""Several API processes on one feedback database: real ``serve`` processes over loopback, a real
PostgreSQL server (tests/conftest.py ``pg_cluster``), concurrent writes, a killed instance, a
database restart, and ``serve --workers 2`` on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import cv2
import numpy as np
import pytest
import sqlalchemy as sa

from fer_core.labels import FER7
from tests.factories import ROOT, end_process, free_port, wait_for_http

CROP_B64 = base64.b64encode(cv2.imencode(
    ".png", np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))[1]).decode()


@pytest.fixture(scope="module")
def model(tiny_run_dir):
    return tiny_run_dir


class Instance:
    """``python -m fer_core serve`` on a free port; stderr goes to a log file."""

    def __init__(self, model, db, log_dir, workers: int = 1):
        self.port = free_port()
        self.log_path = log_dir / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "fer_core", "serve", "--port", str(self.port),
               "--model", str(model), "--feedback-db", str(db), "--log-level", "warning",
               "--workers", str(workers)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FER_API_KEY": ""}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=180):
        return wait_for_http(f"http://127.0.0.1:{self.port}/v1/health", self.proc, timeout,
                             log=self.log_path.read_text, ready=lambda h: h["model_loaded"])

    def request(self, method, path, body=None, conn=None, timeout=30):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("content-type", "")
            return resp.status, (json.loads(raw) if "json" in ctype else raw.decode())
        finally:
            if own:
                conn.close()

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def export_rows(self) -> list[str]:
        status, text = self.request("GET", "/v1/feedback/export")
        assert status == 200, text
        lines = text.splitlines()
        assert lines[0] == "emotion,pixels,Usage"
        return lines[1:]

    def stop(self):
        end_process(self.proc)
        self.log.close()


@pytest.fixture
def instances(tmp_path):
    started: list[Instance] = []

    def start(model, db, n=1, workers=1):
        new = [Instance(model, db, tmp_path, workers) for _ in range(n)]
        started.extend(new)
        for inst in new:
            inst.wait_ready()
        return new

    yield start
    for inst in started:
        inst.stop()


def write(label, note):
    return {"label": label, "image_base64": CROP_B64, "detect": False, "note": note}


def stored_ids(url) -> set[int]:
    from fer_core.api.feedback_store import feedback
    engine = sa.create_engine(url)
    with engine.connect() as c:
        ids = {r[0] for r in c.execute(sa.select(feedback.c.id))}
    engine.dispose()
    return ids


def assert_no_secret(instances_, text_parts, secret):
    for part in text_parts:
        assert secret not in json.dumps(part)
    for inst in instances_:
        inst.log.flush()
        assert secret not in inst.log_path.read_text()


def run_clients(client, n: int = 8) -> None:
    """``client(t)`` for t in range(n), each in its own thread, until all are done."""
    threads = [threading.Thread(target=client, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def test_two_instances_400_concurrent_writes(pg_db, model, instances):
    a, b = instances(model, pg_db, n=2)
    acks, failures = [], []

    def client(t):
        conns = [a.connection(), b.connection()]
        for i in range(50):
            k = (t + i) % 2
            status, body = (a, b)[k].request("POST", "/v1/feedback",
                                             write(FER7[(t + i) % 7], f"{t}-{i}"), conns[k])
            (acks if status == 201 else failures).append(body)
        for c in conns:
            c.close()

    run_clients(client)
    assert failures == [] and len(acks) == 400
    assert len({r["id"] for r in acks}) == 400
    # the counter moves with each write, in its transaction: every write saw its own total
    assert sorted(r["stored"] for r in acks) == list(range(1, 401))
    expected = Counter(FER7.index(FER7[(t + i) % 7]) for t in range(8) for i in range(50))
    for inst in (a, b):
        rows = inst.export_rows()
        assert len(rows) == 400
        assert Counter(int(r.split(",")[0]) for r in rows) == expected
    assert stored_ids(pg_db) == {r["id"] for r in acks}
    # a row inserted by a program that knows nothing of the counter (an older version) counts
    engine = sa.create_engine(pg_db)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO feedback (created_at, label, pixels) "
                          "VALUES (1.0, 'sad', :p)"), {"p": bytes(48 * 48)})
    engine.dispose()
    status, body = b.request("POST", "/v1/feedback", write("happy", "after"))
    assert status == 201 and body["stored"] == 402
    health = a.request("GET", "/v1/health")[1]
    assert health["feedback_store"] == {"kind": "postgresql", "reachable": True}
    secret = pg_db.split(":")[2].split("@")[0]
    assert_no_secret((a, b), [health, acks[:3]], secret)


def test_killed_instance_loses_no_acknowledged_write(pg_db, model, instances):
    a, b = instances(model, pg_db, n=2)
    acked, after_kill_on_a, errors = [], [], []
    killed = threading.Event()
    lock = threading.Lock()

    def client(t):
        conns = [a.connection(), b.connection()]
        for i in range(50):
            k = 0 if killed.is_set() else (t + i) % 2
            was_killed = killed.is_set()
            try:
                status, body = (a, b)[k].request("POST", "/v1/feedback",
                                                 write(FER7[i % 7], f"{t}-{i}"), conns[k])
            except (OSError, http.client.HTTPException) as e:
                if k == 0:
                    errors.append(f"instance A failed: {e!r}")
                continue  # B died mid-request: not acknowledged
            if status == 201:
                with lock:
                    acked.append(body["id"])
                    if was_killed and k == 0:
                        after_kill_on_a.append(body["id"])
                    if k == 1 and len(acked) >= 60 and not killed.is_set():
                        os.kill(b.proc.pid, signal.SIGKILL)
                        killed.set()
            elif k == 0:
                errors.append(body)
        for c in conns:
            c.close()

    run_clients(client)
    assert errors == []
    assert killed.is_set() and b.proc.wait(timeout=10) == -signal.SIGKILL
    assert len(after_kill_on_a) > 50
    present = stored_ids(pg_db)
    assert set(acked) <= present
    assert len(a.export_rows()) == len(present)
    assert a.request("POST", "/v1/feedback", write("sad", "after"))[0] == 201


def test_database_restart_503_then_recovers(pg_cluster, pg_db, model, instances):
    (a,) = instances(model, pg_db)
    face = {"image_base64": CROP_B64}
    assert a.request("POST", "/v1/feedback", write("happy", "before"))[0] == 201
    pg_cluster.stop()
    try:
        down = []
        for _ in range(3):
            status, body = a.request("POST", "/v1/feedback", write("sad", "while down"))
            assert status == 503 and body["error"] == "feedback_unavailable", body
            down.append(body)
        status, body = a.request("GET", "/v1/feedback/export")
        assert status == 503 and body["error"] == "feedback_unavailable"
        down.append(body)
        status, pred = a.request("POST", "/v1/predict?detect=false", face)
        assert status == 200 and len(pred["faces"]) == 1  # predictions keep working
        status, health = a.request("GET", "/v1/health")
        assert status == 200 and health["feedback_store"] == {"kind": "postgresql",
                                                              "reachable": False}
        down.append(health)
    finally:
        pg_cluster.start()
    deadline = time.monotonic() + 20
    while True:
        status, body = a.request("POST", "/v1/feedback", write("sad", "after"))
        if status == 201:
            break
        assert status == 503 and time.monotonic() < deadline, body
        time.sleep(0.3)
    assert body["stored"] == 2 and len(a.export_rows()) == 2
    assert a.request("GET", "/v1/health")[1]["feedback_store"]["reachable"] is True
    secret = pg_db.split(":")[2].split("@")[0]
    assert_no_secret([a], down, secret)
    user = pg_db.split("//")[1].split(":")[0]
    assert user not in json.dumps(down)  # not even the database user


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_serve_two_workers(kind, model, instances, tmp_path, request):
    db = tmp_path / "fb.sqlite3" if kind == "sqlite" else request.getfixturevalue("pg_db")
    (inst,) = instances(model, db, workers=2)
    children = [int(p) for p in open(f"/proc/{inst.proc.pid}/task/{inst.proc.pid}/children")
                .read().split()]
    assert len(children) >= 2
    acks, failures = [], []

    def client(t):
        for i in range(25):  # a new connection each time: the workers share the accepts
            status, body = inst.request("POST", "/v1/feedback", write(FER7[i % 7], f"{t}-{i}"))
            (acks if status == 201 else failures).append(body)

    run_clients(client)
    assert failures == [] and len({r["id"] for r in acks}) == 200
    assert len(inst.export_rows()) == 200
    # /metrics adds up both workers' series, whichever worker answers the scrape
    from prometheus_client.parser import text_string_to_metric_families
    for _ in range(8):  # a new connection each time
        status, text = inst.request("GET", "/metrics")
        assert status == 200
        samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
                   for f in text_string_to_metric_families(text) for m in f.samples}
        assert samples[("fer_feedback_writes_total", (("result", "ok"),))] == 200, text
        assert samples[("fer_http_requests_total", (("method", "POST"), ("route", "/v1/feedback"),
                                                    ("status", "201")))] == 200
        assert [k for k in samples if k[0] == "fer_active_model_info"]  # the answering worker's
    assert inst.request("GET", "/v1/health")[1]["feedback_store"] == {"kind": kind,
                                                                      "reachable": True}
