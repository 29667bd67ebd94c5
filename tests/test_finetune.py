"""The loop on tiny data: a model that never learned one class, corrections of that class posted
through POST /v1/feedback, a fine-tuning run, the comparison; then promotion and rollback in
one app (SQLite), and the bad input of each step. (Two real instances on PostgreSQL under load:
tests/test_promotion_fleet.py.)"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fer_core import compare, finetune, promotion
from fer_core.api.app import create_app
from fer_core.api.feedback_store import FeedbackStore
from fer_core.api.settings import Settings
from fer_core.cli import main
from fer_core.errors import FerError
from fer_core.labels import FER7
from tests.factories import (pattern_faces, png_b64, post_feedback, run_coroutine,
                             tiny_trained_run, without_class)

FEAR = FER7.index("fear")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Base run (never saw fear), its replay data, a store holding 60 fear corrections posted
    through the API, and the fine-tuned candidate."""
    root = tmp_path_factory.mktemp("loop")
    data = pattern_faces(n_per_class=24, seed=0)
    replay = without_class(data, FEAR)
    base = tiny_trained_run(root / "base", replay, epochs=3)
    db = root / "feedback.sqlite3"
    corrections = pattern_faces(n_per_class=60, seed=1, splits=("train",))
    fear_faces = corrections.images[corrections.labels == FEAR]
    settings = Settings(model=str(base), feedback_db=db, model_poll_s=0)
    with TestClient(create_app(settings)) as client:
        got = post_feedback(client, fear_faces, "fear")
        assert got[-1]["stored"] == len(fear_faces)
        metrics = client.get("/metrics").text
    assert 'fer_feedback_writes_total{result="ok"} 60.0' in metrics
    feedback = finetune.load_feedback(db)
    # the head at a higher rate than FER2013's default: 150 toy faces, not 1,600 real ones
    record = finetune.finetune(base, feedback, replay, root / "candidate", lr=1e-2, epochs=20,
                               n_boot=500)
    return {"root": root, "base": base, "db": db, "replay": replay, "record": record,
            "candidate": root / "candidate", "fear_faces": fear_faces}


def test_fine_tuning_on_feedback_fixes_the_class_and_writes_the_comparison(world):
    record = world["record"]
    assert record["status"] == "finished" and record["mode"] == "head"
    assert record["epochs"] == 20 and record["lr"] == 1e-2
    assert record["n_feedback"] == 60 and record["n_holdout"] == 12
    assert record["n_replay"] == min(4 * 48, 6 * 24)  # all the replay data there is
    split = json.loads((world["candidate"] / finetune.SPLIT_FILE).read_text())
    assert not set(split["holdout_ids"]) & set(split["train_ids"])
    result = compare.read(world["candidate"])
    held = result["sets"]["feedback_holdout"]
    assert held["n"] == 12
    fear = held["per_class"]["fear"]
    assert fear["current"] <= 0.2                       # the base never learned fear
    assert fear["candidate"] - fear["current"] >= 0.10  # the figure, on tiny data
    assert fear["lo"] > 0                               # and the interval says so
    val = result["sets"]["val"]
    assert val["n"] == 7 * 24 and "ece" in val and set(val["per_class"]) == set(FER7)
    assert val["per_class"]["fear"]["candidate"] > val["per_class"]["fear"]["current"]
    assert result["focus"] == ["fear"]
    assert (world["candidate"] / "calibration.json").is_file()


def test_full_mode_trains_every_layer_as_a_training_run(world, tmp_path):
    feedback = finetune.load_feedback(world["db"])
    record = finetune.finetune(world["base"], feedback, world["replay"], tmp_path / "full",
                               mode="full", epochs=1, lr=3e-3, n_boot=200)
    assert record["status"] == "finished" and record["mode"] == "full"
    from fer_core import runs
    history = runs.read_jsonl(tmp_path / "full" / "history.jsonl")
    assert len(history) == 1 and (tmp_path / "full" / "last.keras").is_file()
    assert compare.read(tmp_path / "full")["sets"]["feedback_holdout"]["n"] == 12


def test_replay_never_holds_a_feedback_face(world):
    ds = world["replay"]
    faces = world["fear_faces"]
    mixed = np.concatenate([ds.images, faces[:5]])
    dup = ds.subset("all")
    dup.images, dup.labels = mixed, np.concatenate([ds.labels, np.full(5, FEAR)])
    dup.split = np.concatenate([ds.split, np.full(5, "train", dtype="U5")])
    idx = finetune.replay_sample(dup, 10_000, faces, seed=0)
    assert not (idx >= len(ds.images)).any()       # the 5 copies of feedback faces are out
    assert len(idx) == int((ds.split == "train").sum())


def test_bad_feedback_is_refused_with_a_clear_message(world, tmp_path):
    base, replay = world["base"], world["replay"]
    empty = (np.zeros((0, 48, 48), np.uint8), [], np.zeros(0, np.int64))
    with pytest.raises(FerError, match="no feedback"):
        finetune.finetune(base, empty, replay, tmp_path / "a")
    faces = world["fear_faces"][:3]
    with pytest.raises(FerError, match=r"labels the model does not have: 'contempt' \(3 rows\)"):
        finetune.finetune(base, (faces, ["contempt"] * 3, np.arange(3)), replay, tmp_path / "b")
    # the CLI: exit 2 and the message, no job started, for an empty store
    code = main(["finetune", "--model", str(base), "--feedback-db", str(tmp_path / "none.db"),
                 "--data", "demo"])
    assert code == 2
    assert not any(p.name.endswith("finetune") for p in tmp_path.iterdir())


def test_bad_spec_values_name_the_field(world):
    with pytest.raises(FerError, match="holdout"):
        finetune.finetune_spec(world["base"], world["db"], holdout=0.99)
    with pytest.raises(FerError, match="replay"):
        finetune.finetune_spec(world["base"], world["db"], replay=-1)
    with pytest.raises(FerError, match="model not found") as e:
        finetune.finetune_spec(world["root"] / "nope", world["db"])
    assert e.value.status == 404 and "base" in e.value.where


# ---- promotion and rollback in one app (SQLite) ----------------------------------------------

@pytest.fixture
def app_client(world, tmp_path):
    db = tmp_path / "store.sqlite3"
    settings = Settings(model=str(world["base"]), feedback_db=db, model_poll_s=0.2,
                        api_key="k3y")
    with TestClient(create_app(settings)) as client:
        yield client, db


def predict_ids(client) -> tuple[str, str]:
    r = client.post("/v1/predict?detect=false",
                    json={"image_base64": png_b64(np.full((48, 48), 90, np.uint8))})
    assert r.status_code == 200, r.text
    return r.json()["model_id"], r.json()["model_sha256"]


def test_promote_then_rollback_through_the_api(world, app_client):
    client, db = app_client
    before_id, before_sha = predict_ids(client)
    assert len(before_sha) == 64
    key = {"X-API-Key": "k3y"}
    r = client.post("/v1/models/promote", json={"run": world["candidate"].name})
    assert r.status_code == 401
    # runs are named by id in the server's runs folder
    os.environ["FER_RUNS_DIR"] = str(world["root"])
    try:
        r = client.post("/v1/models/promote", json={"run": world["candidate"].name}, headers=key)
    finally:
        del os.environ["FER_RUNS_DIR"]
    assert r.status_code == 200, r.text
    promoted = r.json()
    assert promoted["previous_model_id"] is None and promoted["version"] == 1
    new_id, new_sha = predict_ids(client)
    assert new_id == promoted["model_id"] != before_id and new_sha == promoted["sha256"]
    models = client.get("/v1/models").json()
    assert models["active"]["model_id"] == new_id and models["active"]["source"] == "promoted"
    assert [m["id"] for m in models["models"] if m["active"]] == [new_id]
    hist = client.get("/v1/models/history").json()
    assert hist["history"][0]["action"] == "promote" and hist["history"][0]["run"] == "candidate"
    assert hist["history"][0]["who"].startswith("api ")
    scrape = client.get("/metrics").text
    assert f'fer_active_model_info{{model_id="{new_id}"' in scrape
    assert 'fer_http_requests_total{method="POST",route="/v1/predict",status="200"}' in scrape
    r = client.post("/v1/models/rollback", headers=key)
    assert r.status_code == 200, r.text
    assert predict_ids(client) == (before_id, before_sha)
    r = client.post("/v1/models/rollback", headers=key)
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]
    assert client.get("/v1/health/ready").json()["status"] == "ready"
    assert client.get("/v1/health/live").status_code == 200


def test_promotion_bad_input(world, tmp_path, capsys):
    store = FeedbackStore(tmp_path / "s.sqlite3")
    with pytest.raises(FerError, match="no such run") as e:
        promotion.promote(store, tmp_path / "missing-run")
    assert e.value.status == 404
    training = tmp_path / "busy"
    training.mkdir()
    (training / "metrics.json").write_text(json.dumps({"schema_version": 1,
                                                       "status": "running"}))
    with pytest.raises(FerError, match="still training"):
        promotion.promote(store, training)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(FerError, match="no model.keras"):
        promotion.promote(store, empty)
    with pytest.raises(FerError, match="incompatible"):
        promotion.candidate_record(world["candidate"], reference_labels=FER7[:6])
    with pytest.raises(FerError, match="nothing to roll back"):
        promotion.rollback(store)
    # the CLI: the same messages, exit 2
    assert main(["rollback", "--feedback-db", str(tmp_path / "s.sqlite3")]) == 2
    assert "nothing to roll back" in capsys.readouterr().err
    store.close()


def test_a_worse_candidate_is_promoted_with_a_warning(world, tmp_path, monkeypatch, capsys):
    db = tmp_path / "w.sqlite3"
    worse = dict(compare.read(world["candidate"]))
    worse["verdict"] = {"summary": "worse", "better": [],
                        "worse": ["original val split: accuracy -3.0 points"]}
    import shutil
    run = tmp_path / "worse-run"
    shutil.copytree(world["candidate"], run)
    compare.write(run, worse)
    monkeypatch.setenv("FER_API_KEY", "k3y")
    assert main(["promote", str(run), "--feedback-db", str(db)]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert main(["promote", str(run), "--feedback-db", str(db), "--api-key", "k3y",
                 "--json"]) == 0
    out = capsys.readouterr()
    assert "warning: the candidate is worse" in out.err
    assert json.loads(out.out)["verdict"] == "worse"
    store = FeedbackStore(db)
    assert store.history()[0]["warning"].startswith("the candidate is worse")
    store.close()


def test_a_promoted_model_is_served_from_the_store_without_tensorflow(world, tmp_path):
    """The store keeps the flatbuffer the candidate runs on, so an instance of the runtime
    install (no TensorFlow) loads the promoted model from the store alone."""
    import subprocess
    import sys

    from fer_core.model import FerModel
    store = FeedbackStore(tmp_path / "p.sqlite3")
    out = promotion.promote(store, world["candidate"])
    folder = promotion.materialise(store, out["model_id"], tmp_path / "promoted")
    # a model promoted before schema 3 has no flatbuffer in the store: the .keras alone
    from fer_core.api import feedback_store as fs
    with store.engine.begin() as c:
        c.execute(fs.model_runtime.delete())
    older = promotion.materialise(store, out["model_id"], tmp_path / "older")
    store.close()
    assert not (older / "model.tflite").exists() and (older / "model.keras").is_file()
    assert FerModel.load(older).labels == FerModel.load(world["candidate"]).labels
    assert {p.name for p in folder.iterdir()} >= {"model.keras", "labels.json", "model.tflite",
                                                  "model.tflite.json"}
    record = json.loads((folder / "model.tflite.json").read_text())
    assert record["source_sha256"] == out["sha256"] and record["parity_checked"] is True
    faces = world["fear_faces"][:8]
    np.save(tmp_path / "faces.npy", faces)
    expected = FerModel.load(world["candidate"]).predict_proba(faces)
    p = subprocess.run([sys.executable, "-c", """
import json, sys
import numpy as np
from fer_core.model import FerModel
m = FerModel.load(sys.argv[1])
np.save(sys.argv[3], m.predict_proba(np.load(sys.argv[2])))
print(json.dumps([m.backend_name, sorted({n.split('.')[0] for n in sys.modules}
                                         & {'tensorflow', 'keras'})]))
""", str(folder), str(tmp_path / "faces.npy"), str(tmp_path / "probs.npy")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FER_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.splitlines()[-1]) == ["tflite", []]
    assert np.abs(np.load(tmp_path / "probs.npy") - expected).max() < 1e-5


def test_a_store_failing_mid_promotion_changes_nothing(world, tmp_path, monkeypatch):
    from sqlalchemy import exc as sa_exc

    from fer_core.api import feedback_store as fs
    store = FeedbackStore(tmp_path / "f.sqlite3")
    first = promotion.promote(store, world["base"])  # something active already
    real = fs.model_history

    class Broken:
        def insert(self):
            raise sa_exc.OperationalError("INSERT", {}, ConnectionError("server closed"))
    monkeypatch.setattr(fs, "model_history", Broken())
    with pytest.raises(FerError, match="unavailable") as e:
        promotion.promote(store, world["candidate"])
    assert e.value.status == 503
    monkeypatch.setattr(fs, "model_history", real)
    monkeypatch.setattr(fs, "RETRY_AFTER_S", 0.0)   # the store is back at once
    assert store.active()["model_id"] == first["model_id"] and store.active()["version"] == 1
    with store.engine.connect() as c:
        ids = [r[0] for r in c.execute(sa.select(fs.model_files.c.model_id))]
    assert ids == [first["model_id"]]                 # the candidate's file was rolled back too
    store.close()


def test_a_request_pinned_before_a_swap_finishes_on_its_model(world, tmp_path):
    from fer_core.api.service import ModelService
    store = FeedbackStore(tmp_path / "pin.sqlite3")
    faces = world["fear_faces"][:2]

    async def go():
        svc = ModelService(Settings(model=str(world["base"]), feedback_db=tmp_path / "x.db"))
        svc.load()
        await svc.start()
        configured = svc.model_id
        promotion.promote(store, world["candidate"])
        assert await svc.follow(store, store.active())
        promoted = svc.model_id
        view = svc.pin()                              # a request starts on the promoted model
        promotion.rollback(store)
        assert await svc.follow(store, store.active())
        assert svc.model_id == configured and view.model_id == promoted
        probs = await view.batcher.predict(faces)     # still answered by its own model
        assert probs.shape == (2, 7)
        assert view.describe(faces, [[0, 0, 48, 48]] * 2, probs, 1)[0]["emotion"]
        old = view.slot
        assert old.retired and old.batcher._task is not None
        await view.release()                          # the last request on it: batcher stops
        assert old.batcher._task is None
        await svc.stop()
    run_coroutine(go())
    store.close()


def test_ready_is_503_without_a_model_and_live_still_answers(tmp_path):
    settings = Settings(model=str(tmp_path / "none"), feedback_db=tmp_path / "r.sqlite3")
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        assert "model not found" in r.json()["model_error"]
        assert client.get("/v1/health/live").json() == {"status": "alive"}
        assert client.get("/v1/health").json()["status"] == "degraded"
