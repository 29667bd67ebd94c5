"""FerModel: one loader (cached per file), one TTA path, one describe, calibration on every path,
the shared detector presets, and one decode path for folder and CSV faces."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import evaluation, synthetic, vision
from fer_core.labels import FER7
from fer_core.model import FerModel, apply_temperature, clear_cache
from fer_core.model_files import read_calibration
from tests.factories import (make_tiny_run, pattern_faces, save_model_dir, tiny_cnn,
                             write_fer_csv)

ROOT = Path(__file__).resolve().parent.parent


def faces(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def save_run(root: Path, bias=None, n_classes: int = 7, labels=True, seed: int = 0) -> Path:
    """A run dir with :func:`tests.factories.tiny_cnn`; ``bias`` makes its output constant."""
    return save_model_dir(root, tiny_cnn(n_classes, bias=bias, seed=seed),
                          list(FER7) if labels else None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    r = save_run(tmp_path_factory.mktemp("c") / "cal", seed=1)
    (r / "calibration.json").write_text(json.dumps({"temperature": 0.5,
                                                    "temperature_tta": 2.0}))
    return r


# ------------------------------------------------------------------ loading

def test_load_is_cached_per_file_and_reloads_when_it_changes(tmp_path):
    r = save_run(tmp_path / "r")
    got = []
    threads = [threading.Thread(target=lambda: got.append(FerModel.load(r))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in got}) == 1, "concurrent loads share one object"
    assert FerModel.load(r / "model.keras") is got[0]
    save_run(r, seed=5)   # the file changes: a new model
    again = FerModel.load(r)
    assert again is not got[0] and again.model_id != got[0].model_id


def test_a_model_without_labels_gets_them_from_its_output_size(tmp_path):
    m = FerModel.load(save_run(tmp_path / "eight", n_classes=8, labels=False))
    assert m.label_set == "ferplus8" and len(m.labels) == 8


def test_flip_tta_is_the_mean_of_the_face_and_its_mirror(run):
    m = FerModel.load(run)
    x = faces()
    plain = m.predict_proba(x, tta=False)
    mirror = m.predict_proba(x[:, :, ::-1], tta=False)
    before = m.calls
    both = m.predict_proba(x, tta=True)
    assert m.calls - before == 1, "faces and mirrors share one model call"
    assert np.allclose(both, (plain + mirror) / 2, atol=1e-6)
    assert not np.allclose(both, plain)


def test_evaluate_reports_progress_in_faces(run):

    ds = pattern_faces(n_per_class=20, seed=1)
    n = int((ds.split == "val").sum())
    for tta in (False, True):
        seen = []
        evaluation.evaluate(run, ds, split="val", tta=tta, batch_size=16,
                            progress=lambda done, total: seen.append((done, total)))
        assert seen[-1] == (n, n) and len(seen) == -(-n * (1 + tta) // 16)
        assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


# ------------------------------------------------------------------ calibration

def test_temperature_never_changes_the_predicted_class():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7) * 0.5, size=2000).astype(np.float32)
    for t in (0.05, 0.3, 0.7, 1.0, 1.5, 5.0, 20.0):
        q = apply_temperature(p, t)
        assert np.allclose(q.sum(1), 1, atol=1e-5)
        assert (q.argmax(1) == p.argmax(1)).all(), t
    assert (apply_temperature(p, 0.5).max(1) >= p.max(1) - 1e-6).all(), "T < 1 sharpens"


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (6000, 7))
    true_t = 0.6   # the labels follow softmax(logits / 0.6); the model says softmax(logits)
    sharp = np.exp(logits / true_t)
    sharp /= sharp.sum(1, keepdims=True)
    y = np.array([rng.choice(7, p=row) for row in sharp])
    probs = np.exp(logits)
    probs /= probs.sum(1, keepdims=True)
    assert evaluation.fit_temperature(y, probs, "nll") == pytest.approx(true_t, rel=0.08)
    t = evaluation.fit_temperature(y, probs)
    assert t == pytest.approx(true_t, rel=0.15)
    assert evaluation.calibration(y, apply_temperature(probs, t))[0] < \
        evaluation.calibration(y, probs)[0] / 3


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = rng.random(3000) < 0.6
    same = evaluation.paired_bootstrap(a, a, n_boot=500)
    assert same["delta"] == same["lo"] == same["hi"] == 0.0
    b = a.copy()
    b[np.flatnonzero(~a)[:300]] = True          # b fixes 300 of a's mistakes: +10 points
    better = evaluation.paired_bootstrap(a, b, n_boot=2000)
    assert better["delta"] == pytest.approx(0.1)
    assert 0 < better["lo"] < 0.1 < better["hi"] and better["p_b_better"] == 1.0
    c = b.copy()
    c[np.flatnonzero(a)[:300]] = False          # ... and breaks 300 right answers: no change
    even = evaluation.paired_bootstrap(a, c, n_boot=2000)
    assert even["delta"] == 0.0 and even["lo"] < 0 < even["hi"]
    assert evaluation.paired_bootstrap(a, c, n_boot=2000) == even, "seeded"


def test_calibration_applies_on_every_path(calibrated_run, tmp_path):
    from fastapi.testclient import TestClient

    from fer_core.api.app import create_app
    from fer_core.api.settings import Settings
    from fer_core.predict import Predictor

    m = FerModel.load(calibrated_run)
    assert (m.calibration.temperature, m.calibration.temperature_tta) == (0.5, 2.0)
    x = faces(3)
    raw = m.predict_proba(x, calibrated=False)
    expected = apply_temperature(raw, 0.5)
    assert np.allclose(m.predict_proba(x), expected, atol=1e-6)
    assert np.allclose(Predictor(calibrated_run).predict_faces(x), expected, atol=1e-6)
    raw_tta = m.predict_proba(x, tta=True, calibrated=False)
    assert np.allclose(Predictor(calibrated_run, tta=True).predict_faces(x),
                       apply_temperature(raw_tta, 2.0), atol=1e-6)
    # the API (micro-batcher -> Predictor) answers the same probabilities
    with TestClient(create_app(Settings(model=str(calibrated_run),
                                        feedback_db=tmp_path / "fb.sqlite3"))) as client:
        ok, buf = cv2.imencode(".png", x[0])
        body = client.post("/v1/predict?detect=false", files={"file": ("f.png", buf.tobytes(),
                                                                      "image/png")}).json()
    assert np.allclose(list(body["faces"][0]["scores"].values()), expected[0], atol=1e-5)
    # evaluation reports the calibrated figures and the raw ECE
    ds = pattern_faces(n_per_class=6, seed=2)
    rep, preds = evaluation.evaluate(m, ds, split="val", return_predictions=True)
    test = ds.subset("val")
    assert rep["temperature"] == 0.5 and rep["calibrated"]
    assert np.allclose(preds.probs, apply_temperature(m.predict_proba(test.images,
                                                                      calibrated=False), 0.5),
                       atol=1e-6)
    raw_rep = evaluation.metrics(test.labels, m.predict_proba(test.images, calibrated=False),
                                 FER7)
    assert rep["accuracy"] == raw_rep["accuracy"], "calibration keeps accuracy"
    assert rep["uncalibrated"]["ece"] == raw_rep["ece"]


def test_a_calibration_fitted_for_another_model_file_is_ignored(tmp_path):
    r = save_run(tmp_path / "r")
    (r / "calibration.json").write_text(json.dumps({"temperature": 0.5,
                                                    "model_sha256": "0" * 64}))
    cal = read_calibration(r)
    assert cal.temperature == 1.0 and not cal.fitted and "another model file" in cal.note


def test_calibrate_cli_writes_a_calibration_every_path_then_uses(tmp_path, capsys):
    from fer_core.cli import main

    r = make_tiny_run(tmp_path / "runs", "trained", epochs=4)
    csv = write_fer_csv(pattern_faces(n_per_class=20, seed=4, splits=("train", "val")),
                        tmp_path / "p.csv")
    assert main(["calibrate", str(csv), "--model", str(r), "--bootstrap", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == str(r / "calibration.json") and out["n"] == 140
    assert out["no_tta"]["accuracy_after"] == out["no_tta"]["accuracy"]
    assert out["no_tta"]["ece_after"] <= out["no_tta"]["ece_before"]
    assert out["tta_default"] == (out["tta_bootstrap"]["lo"] > 0)
    m = FerModel.load(r)
    assert m.calibration.temperature == out["temperature"] and m.calibration.fitted
    assert main(["calibrate", str(csv), "--model", str(r), "--split", "test"]) == 2


def test_shipped_model_is_calibrated_on_publictest(fer2013_path):
    from fer_core import DEFAULT_MODEL, data

    clear_cache()
    m = FerModel.load(DEFAULT_MODEL)
    assert m.calibration.fitted, "models/fer2013-default/calibration.json is missing or stale"
    rep = evaluation.evaluate(m, data.load(fer2013_path), split="val")
    assert rep["n"] == 3589
    assert rep["ece"] <= 0.03 < rep["uncalibrated"]["ece"]
    assert rep["accuracy"] == m.calibration.record["no_tta"]["accuracy"]
    assert m.default_tta is False and m.calibration.record["tta_bootstrap"]["lo"] <= 0


# ------------------------------------------------------------------ describe

def test_api_and_photo_page_give_the_same_top_k_for_a_tie(tmp_path):
    """A model whose output ties disgust and fear on top: the API and the app list the same
    top-k, ties in label order."""
    from fastapi.testclient import TestClient

    from fer_core.api.app import create_app
    from fer_core.api.settings import Settings
    from fer_core.photo import analyse_photo
    from fer_core.predict import Predictor

    r = save_run(tmp_path / "tie", bias=[0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.0])
    frame = synthetic.synthetic_frame(640, 480, face_size=160)
    ok, buf = cv2.imencode(".png", frame)
    data = buf.tobytes()
    app_res = analyse_photo("f.png", data, Predictor(r, vision.DetectorConfig.preset("photo")))
    with TestClient(create_app(Settings(model=str(r), detector_preset="accurate",
                                        feedback_db=tmp_path / "fb.sqlite3"))) as client:
        body = client.post("/v1/predict?top_k=4",
                           files={"file": ("f.png", data, "image/png")}).json()
    assert len(app_res.faces) == len(body["faces"]) == 1
    app_face, api_face = app_res.faces[0], body["faces"][0]
    assert api_face["box"] == app_face.box
    app_top = [k for k, _ in app_face.top_k]
    api_top = [k for k, _ in api_face["top_k"]]
    assert app_top == ["disgust", "fear", "surprise"]
    assert api_top[:3] == app_top and api_top[3] == "angry"


# ------------------------------------------------------------------ presets and decoding

WEBCAM_SETTINGS = """
import json, sys
import streamlit_webrtc  # noqa: F401 - aiortc before TensorFlow (see notes: pylibsrtp)
import streamlit as st
import ui.models
from streamlit.testing.v1 import AppTest

seen = {}
def fake_get_predictor(path, settings=None):
    seen.update(settings)
    st.stop()
ui.models.get_predictor = fake_get_predictor
at = AppTest.from_file("pages/webcam.py", default_timeout=60).run()
assert not at.exception, at.exception
print(json.dumps(seen))
"""


def test_webcam_page_and_bench_predict_use_the_same_detector_preset(run):
    """The detector settings the Webcam page hands to its Predictor by default are the ones
    ``bench predict`` measures. (The page runs in a child process: it imports aiortc, which
    must come before TensorFlow.)"""
    import os
    import subprocess
    import sys

    from fer_core.bench import predict as bench_predict

    env = {**os.environ, "FER_MODEL": str(run), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", WEBCAM_SETTINGS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    page = json.loads(out.stdout.strip().splitlines()[-1])
    assert page, "the Webcam page did not ask for a predictor"

    class Args:
        image = None
        model = str(run)
        repeat = 5
        max_side = min_size = None
        backend = "auto"
        tta = None
    bench = bench_predict.run(Args())
    assert bench["detector"] == page == vision.DetectorConfig.preset("realtime").to_dict()


def test_folder_and_csv_faces_give_identical_model_inputs(tmp_path):
    """The same faces stored as a FER2013 CSV and as image files (grey PNG, colour PNG, RGBA
    PNG with a transparent border, 96 px upscale) load as the faces inference would crop."""
    from fer_core import data

    ds = pattern_faces(n_per_class=2, seed=0, splits=("train",))
    csv_ds = data.load(write_fer_csv(ds, tmp_path / "faces.csv"), cache=False)
    root = tmp_path / "folder"
    written = []
    for i, (img, lab) in enumerate(zip(ds.images, ds.labels)):
        d = root / "train" / FER7[lab]
        d.mkdir(parents=True, exist_ok=True)
        kind = i % 4
        if kind == 0:
            out = img
        elif kind == 1:
            out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif kind == 2:
            out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
            out[:4, :, 3] = 0                       # transparent rows: composited on white
        else:
            out = cv2.resize(img, (96, 96), interpolation=cv2.INTER_NEAREST)
        path = d / f"{i:03d}.png"
        cv2.imwrite(str(path), out)
        written.append((path, img, kind))
    folder_ds = data.load(root, cache=False)
    from fer_core.data import folders
    read = []
    for path, img, kind in written:
        face = folders.read_face(path)
        inference = vision.whole_image_face(vision.decode_image(path))[0]
        assert np.array_equal(face, inference), f"{path.name}: folder != inference input"
        if kind == 2:
            assert (face[:4] == 255).all() and np.array_equal(face[4:], img[4:])
        else:
            assert np.array_equal(face, img), f"{path.name}: differs from the CSV face"
        read.append(face)
    assert sorted(map(bytes, folder_ds.images)) == sorted(map(bytes, read))
    assert sorted(map(bytes, csv_ds.images)) == sorted(map(bytes, ds.images))
