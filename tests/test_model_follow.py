"""How a ``serve`` instance follows the store's active-model pointer, with the races made
deterministic: a rollback (or another promotion) that lands while the promoted model is still
loading, a pointer read before a newer one was applied, and a poll that fails with an
unexpected error. Real models, a real SQLite store and the real ModelService / poller; only the
timing is forced. (Two real instances on PostgreSQL under load: tests/test_promotion_fleet.py.)
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fer_core import promotion
from fer_core.api.app import create_app
from fer_core.api.feedback_store import FeedbackStore
from fer_core.api.service import ModelService
from fer_core.api.settings import Settings
from tests.factories import png_b64, run_coroutine, tiny_keras_run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("follow")
    return [tiny_keras_run(root / name, seed=k) for k, name in enumerate(("a", "b", "c"))]


def loaded_service(model, db) -> ModelService:
    svc = ModelService(Settings(model=str(model), feedback_db=db))
    svc.load()
    assert svc.loaded, svc.error
    return svc


@pytest.mark.parametrize("meanwhile", ["rollback", "rollback and promote another"])
def test_a_pointer_moved_during_the_load_is_followed_not_the_stale_one(models, tmp_path,
                                                                       meanwhile):
    a, b, c = models
    store = FeedbackStore(tmp_path / "store.sqlite3")
    svc = loaded_service(a, tmp_path / "store.sqlite3")
    configured = svc.model_id
    real_load, loads = svc._load_promoted, []

    def load_while_the_pointer_moves(store_, model_id):
        slot = real_load(store_, model_id)
        if not loads:   # the person rolls back (and promotes c) before this load is done
            promotion.rollback(store, who="test")
            if meanwhile != "rollback":
                promotion.promote(store, c, who="test")
        loads.append(model_id)
        return slot
    svc._load_promoted = load_while_the_pointer_moves

    async def go():
        await svc.start()
        promoted_b = promotion.promote(store, b, who="test")["model_id"]
        changed = await svc.follow(store, store.active())   # read: b, version 1
        out = (changed, svc.model_id, svc.pointer_version, svc.swaps, promoted_b)
        await svc.stop()
        return out
    changed, serving, version, swaps, promoted_b = run_coroutine(go())
    pointer = store.active()
    if meanwhile == "rollback":
        assert pointer["model_id"] is None and pointer["version"] == 2
        assert (changed, serving, swaps) == (False, configured, 0)   # b was never swapped in
        assert loads == [promoted_b]
    else:
        assert pointer["version"] == 3
        assert (changed, serving, swaps) == (True, pointer["model_id"], 1)
        assert loads == [promoted_b, pointer["model_id"]] and serving not in (configured,
                                                                              promoted_b)
    assert version == pointer["version"]
    store.close()


def test_a_pointer_read_before_a_newer_one_was_applied_changes_nothing(models, tmp_path):
    a, b, _ = models
    store = FeedbackStore(tmp_path / "store.sqlite3")
    svc = loaded_service(a, tmp_path / "store.sqlite3")

    async def go():
        await svc.start()
        stale = store.active()            # the poller reads the pointer (version 0) ...
        promoted = promotion.promote(store, b, who="test")
        assert await svc.follow(store, store.active())   # ... an API promotion applies v1
        changed = await svc.follow(store, stale)          # ... then the poller goes on
        out = (changed, svc.model_id, svc.pointer_version, promoted["model_id"])
        await svc.stop()
        return out
    changed, serving, version, promoted_b = run_coroutine(go())
    assert (changed, serving, version) == (False, promoted_b, 1)
    store.close()


def test_the_poller_outlives_an_unexpected_error(models, tmp_path, monkeypatch):
    a, b, _ = models
    db = tmp_path / "store.sqlite3"
    real_active, failures = FeedbackStore.active, []

    def active(self):
        if len(failures) < 2 and getattr(self, "fail_next", False):
            failures.append(time.monotonic())
            raise RuntimeError("driver state this code does not know")
        return real_active(self)
    monkeypatch.setattr(FeedbackStore, "active", active)
    crop = {"image_base64": png_b64(np.full((48, 48), 90, np.uint8))}
    with TestClient(create_app(Settings(model=str(a), feedback_db=db, model_poll_s=0.05))) as c:
        before = c.post("/v1/predict?detect=false", json=crop).json()["model_id"]
        c.app.state.store.fail_next = True           # the next two polls raise
        deadline = time.monotonic() + 30
        while len(failures) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(failures) == 2
        other = FeedbackStore(db)
        new_id = promotion.promote(other, b, who="test")["model_id"]
        other.close()
        while time.monotonic() < deadline:   # the poller is still there: it follows
            now = c.post("/v1/predict?detect=false", json=crop).json()["model_id"]
            if now != before:
                break
            time.sleep(0.05)
        assert now == new_id
        metrics = c.get("/metrics").text
    assert 'fer_store_errors_total{operation="poll"} 2.0' in metrics
    assert "fer_model_swaps_total 1.0" in metrics
