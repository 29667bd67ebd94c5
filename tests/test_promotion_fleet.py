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
# The bounds. A promotion reaches an instance within one poll plus loading the model from the
# store (measured when instances still converted it with TensorFlow: write it out, load it
# with Keras, convert it to TFLite, warm up: 3.6 s on a quiet machine, up to 22 s on these 2
# cores at load average 24-29; now the store holds its flatbuffer, which loads without
# TensorFlow); 45 s of load leaves twice that. A rollback loads nothing (the configured model stays
# loaded): one poll and one read of the store, 0.1-1.1 s measured at the same loads.
BOUND_S = POLL_S + 45.0
ROLLBACK_BOUND_S = POLL_S + 14.0
CROP = png_b64(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The configured model with its exported flatbuffer, as the shipped model has one, and a
    candidate without: promotion stores the flatbuffer it runs on, so the instances run both
    on LiteRT from files alone, as instances of the runtime install would."""
    from fer_core.export import export
    root = tmp_path_factory.mktemp("fleet")
    current = tiny_keras_run(root / "current", seed=0)
    export(current, "tflite")
    return current, tiny_keras_run(root / "candidate", seed=1)


class Load:
    """8 client threads predicting on both instances until stopped; every answer recorded as
    (sent, answered, instance, status, model id)."""

    def __init__(self, instances, n: int = 8):
        self.instances, self.n = instances, n
        self.records: list[tuple[float, float, int, int, str | None]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(t,)) for t in range(n)]

    def client(self, t: int):
        k = t % len(self.instances)
        inst = self.instances[k]
        conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=60)
        while not self.stop.is_set():
            sent = time.monotonic()
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
                self.records.append((sent, time.monotonic(), k, status,
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

    def snapshot(self) -> list:
        with self.lock:
            return list(self.records)


class StaleAnswer(AssertionError):
    """A request sent after its instance had switched was answered by another model."""


def switch_times(records, n_instances: int, model_id: str, since: float):
    """Per instance, when it switched to ``model_id``: the time its first answer with it came
    back (after ``since``); None while some instance has not answered with it yet.

    A request pins the model it starts on, so requests in flight at the swap may still come
    back from the previous model after the first answer from the new one (by design, and more
    often on a loaded machine, where a request can take longer than the one behind it). Only a
    request *sent* after its instance's first answer from ``model_id`` must be answered by it:
    anything else raises :class:`StaleAnswer`. ``(in_flight, after)`` counts, per switch, the
    answers from the previous model that came back late, and the answers checked."""
    times, late, checked = [], 0, 0
    for k in range(n_instances):
        mine = [r for r in records if r[2] == k and r[1] >= since]
        hits = [r[1] for r in mine if r[4] == model_id]
        if not hits:
            return None
        switched = min(hits)
        for sent, answered, _, _, got in mine:
            if sent > switched:
                checked += 1
                if got != model_id:
                    raise StaleAnswer(f"instance {k} switched to {model_id} at "
                                      f"+{switched - since:.2f} s but answered a request sent "
                                      f"at +{sent - since:.2f} s with {got}")
            elif answered > switched and got != model_id:
                late += 1
        times.append(switched - since)
    return times, (late, checked)


def wait_all(load: Load, model_id: str, since: float, bound: float):
    """:func:`switch_times` once every instance has switched (AssertionError after ``bound``)."""
    while True:
        got = switch_times(load.snapshot(), len(load.instances), model_id, since)
        if got is not None:
            return got
        assert time.monotonic() < since + bound, \
            f"not every instance answers {model_id} within {bound} s"
        time.sleep(0.1)


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
            wait_all(load, new_id, t_promote, BOUND_S)
            scrapes += [(k, scrape(i)) for k, i in enumerate(insts)]
            time.sleep(0.5)
            t_back = time.monotonic()
            back = promotion.rollback(store, who="fleet test")
            assert back["model_id"] is None and back["previous_model_id"] == new_id
            wait_all(load, old_id, t_back, ROLLBACK_BOUND_S)
            time.sleep(0.5)
            scrapes += [(k, scrape(i)) for k, i in enumerate(insts)]
        assert load.errors == [], load.errors[:5]
        assert len(load.records) > 50
        # every answer, now all are in: each switch once, and no stale answer after it
        # (answers that came back before the rollback started are the promotion's)
        took_new, (late_new, n_new) = switch_times(
            [r for r in load.records if r[1] < t_back], 2, new_id, t_promote)
        took_old, (late_old, n_old) = switch_times(load.records, 2, old_id, t_back)
        assert max(took_new) <= BOUND_S and max(took_old) <= ROLLBACK_BOUND_S
        assert n_new > 0 and n_old > 0
        for k in range(2):  # each instance: counters moving, the model id changing A -> B -> A
            mine = [text for j, text in scrapes if j == k]
            counts = [predict_count(t) for t in mine]
            assert counts[0] < counts[1] < counts[2], counts
            assert [active_id(t) for t in mine] == [old_id, new_id, old_id]
            assert "fer_batch_size_count" in mine[-1] and "fer_model_swaps_total 2.0" in mine[-1]
        hist = store.history()
        assert [h["action"] for h in hist[:2]] == ["rollback", "promote"]
        print(f"\nswitch per instance to the new model: {took_new[0]:.2f} / {took_new[1]:.2f} s, "
              f"back: {took_old[0]:.2f} / {took_old[1]:.2f} s (bounds {BOUND_S:.0f} / "
              f"{ROLLBACK_BOUND_S:.0f} s); "
              f"{late_new} + {late_old} in-flight answers from the previous model after a "
              f"switch; {len(load.records)} requests, 0 failed")
    finally:
        store.close()
        for inst in insts:
            inst.stop()


def test_switch_check_allows_in_flight_answers_and_catches_stale_ones():
    """The check the fleet test relies on, on a recorded sequence: (sent, answered, instance,
    status, model id), the switch at t=10."""
    ok = [(9.0, 10.0, 0, 200, "A"), (9.8, 10.5, 0, 200, "B"),
          # sent before the swap, answered after instance 0's first "B": finishes on "A"
          (9.7, 10.7, 0, 200, "A"),
          (10.6, 10.8, 0, 200, "B"), (9.9, 11.0, 1, 200, "A"), (10.9, 11.2, 1, 200, "B")]
    times, (late, checked) = switch_times(ok, 2, "B", since=10.0)
    assert times == [0.5, pytest.approx(1.2)] and late == 1 and checked == 1
    assert switch_times(ok[:3], 2, "B", since=10.0) is None   # instance 1 not there yet
    stale = ok + [(10.6, 11.3, 0, 200, "A")]                 # sent after the switch
    with pytest.raises(StaleAnswer, match="instance 0 switched to B at"):
        switch_times(stale, 2, "B", since=10.0)
