"""fer_core.evaluation: metrics vs scikit-learn, calibration, label-set alignment, CLI vs API
and exports."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from fer_core import evaluation as ev
from fer_core.errors import FerError
from fer_core.labels import FER7, FERPLUS8, MERGED6
from tests.factories import conv_pool_cnn, pattern_faces

# ------------------------------------------------------------------ fixed predictions


def _fixed():
    """4 classes; class 3 never occurs in the truth but is predicted once."""
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2])
    probs = np.array([
        [.70, .10, .10, .10],   # 0 ok
        [.22, .50, .18, .10],   # 0 -> 1, true is runner-up
        [.60, .20, .10, .10],   # ok
        [.10, .80, .05, .05],   # 1 ok
        [.30, .10, .15, .45],   # 1 -> 3, true is last
        [.05, .05, .85, .05],   # ok
        [.40, .05, .50, .05],   # ok
        [.55, .05, .30, .10],   # 2 -> 0, true is runner-up
        [.10, .20, .60, .10],   # ok
        [.34, .33, .22, .11],   # ok
        [.10, .15, .70, .05],   # 1 -> 2, true is runner-up
        [.20, .25, .45, .10],   # ok
    ])
    return y, probs


def test_metrics_match_sklearn():
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support, top_k_accuracy_score)
    y, probs = _fixed()
    names = ["a", "b", "c", "d"]
    m = ev.metrics(y, probs, names)
    pred = probs.argmax(1)
    assert m["n"] == 12 and m["labels"] == names
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0),
                                          abs=1e-6)
    assert m["top2_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, probs, k=2, labels=[0, 1, 2, 3]), abs=1e-6)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, n in enumerate(names):
        pc = m["per_class"][n]
        assert (pc["precision"], pc["recall"], pc["f1"]) == pytest.approx((p[i], r[i], f[i]),
                                                                           abs=1e-6)
        assert pc["support"] == s[i]
    assert m["per_class"]["d"]["support"] == 0 and m["true_vs_pred"]["d"] == {"true": 0,
                                                                               "pred": 1}
    cm = confusion_matrix(y, pred, labels=[0, 1, 2, 3])
    assert m["confusion_matrix"] == cm.tolist()
    norm = np.asarray(m["confusion_matrix_normalized"])
    assert np.allclose(norm[:3].sum(1), 1) and np.all(norm[3] == 0)   # empty row stays 0
    assert norm[2, 0] == pytest.approx(cm[2, 0] / cm[2].sum(), abs=1e-6)
    json.dumps(m)   # JSON-serialisable


def test_second_guess_rate_by_hand():
    y, probs = _fixed()
    # 4 wrong answers (rows 1, 4, 7, 10); the true label was runner-up in rows 1, 7, 10
    m = ev.metrics(y, probs, ["a", "b", "c", "d"])
    assert m["n_wrong"] == 4
    assert m["second_guess_rate"] == pytest.approx(0.75)
    assert ev.second_guess_rate(np.array([0]), np.array([[.9, .1]])) == 0.0


def test_ece_hand_computed():
    # confidences 0.9 (right), 0.9 (wrong), 0.62 (right), 0.41 (wrong), 15 bins
    probs = np.array([[.9, .05, .05], [.05, .9, .05], [.62, .2, .18], [.41, .3, .29]])
    y = np.array([0, 0, 0, 1])
    ece, bins = ev.calibration(y, probs)
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.62) + 1 / 4 * abs(0 - 0.41)
    assert ece == pytest.approx(expected, abs=1e-6)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    b13 = bins[13]          # (13/15, 14/15] holds both 0.9s
    assert b13["count"] == 2 and b13["accuracy"] == 0.5 and b13["confidence"] == pytest.approx(.9)
    assert bins[9]["count"] == 1 and bins[6]["count"] == 1
    assert bins[0]["confidence"] is None and bins[0]["count"] == 0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(FerError):
        ev.metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"])
    with pytest.raises(FerError):
        ev.metrics(np.array([0, 5]), np.ones((2, 3)) / 3, ["a", "b", "c"])


def test_galleries():
    y, probs = _fixed()
    pred = probs.argmax(1)
    assert ev.confusion_cell(y, pred, 0, 1).tolist() == [1]
    assert ev.confusion_cell(y, pred, 2, 2).tolist() == [5, 6, 8, 11]
    assert ev.confusion_cell(y, pred, 2, 2, limit=2).tolist() == [5, 6]
    # wrong rows 1 (.50), 4 (.45), 7 (.55), 10 (.70) -> most confident first
    assert ev.confident_mistakes(y, probs, k=3).tolist() == [10, 7, 1]
    idx = ev.random_sample(12, 5, seed=1)
    assert len(set(idx.tolist())) == 5 and idx.max() < 12
    preds = ev.Predictions(images=np.zeros((12, 48, 48), np.uint8), y_true=y,
                           probs=probs.astype(np.float32), label_names=("a", "b", "c", "d"),
                           index=np.arange(12) + 100)
    item = ev.gallery_items(preds, [10])[0]
    assert (item["true"], item["pred"], item["row"], item["correct"]) == ("b", "c", 110, False)
    assert item["confidence"] == pytest.approx(.7) and sum(item["probs"].values()) == \
        pytest.approx(1)


def test_compare_and_exports():
    y, probs = _fixed()
    a = ev.metrics(y, probs, ["a", "b", "c", "d"])
    better = probs.copy()
    better[1] = [.1, .2, .6, .1]     # still wrong, different mistake
    better[7] = [.1, .1, .7, .1]     # now right
    b = ev.metrics(y, better, ["a", "b", "c", "d"])
    d = ev.compare(a, b)
    assert d["headline"]["accuracy"]["delta"] == pytest.approx(b["accuracy"] - a["accuracy"])
    assert d["headline"]["accuracy"]["delta"] == pytest.approx(1 / 12, abs=1e-5)
    assert d["per_class"]["c"]["recall"]["delta"] == pytest.approx(1 / 5, abs=1e-5)  # 5 c faces
    assert all(v["delta"] == 0 for v in ev.compare(a, a)["headline"].values())

    rows = list(csv.DictReader(io.StringIO(ev.metrics_to_csv(a))))
    assert [r["label"] for r in rows[:4]] == ["a", "b", "c", "d"]
    assert float(rows[2]["f1"]) == pytest.approx(a["per_class"]["c"]["f1"])
    assert rows[-1]["label"] == "accuracy"

    import cv2
    for normalized in (False, True):
        png = ev.confusion_png({**a, "model": "m", "split": "test"}, normalized=normalized)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 4 * 64 and img.shape[1] > 4 * 64
        assert img.std() > 10      # not a blank canvas


# ------------------------------------------------------------------ trained model

def test_trained_model_learned_and_report_is_complete(trained_cnn, eval_faces):
    model, _ = trained_cnn
    report = ev.evaluate(model, eval_faces)
    assert report["split"] == "test" and report["n"] == 7 * 20
    assert report["accuracy"] > 0.8           # chance is 1/7
    assert report["macro_f1"] > 0.8 and report["top2_accuracy"] >= report["accuracy"]
    assert report["remapped"] is None and report["labels"] == list(FER7)
    assert np.asarray(report["confusion_matrix"]).sum() == report["n"]
    for key in ("ece", "reliability", "second_guess_rate", "true_vs_pred", "timing",
                "confusion_matrix_normalized", "per_class"):
        assert key in report
    json.dumps(report)


def test_predict_proba_matches_model_and_tta(trained_cnn, eval_faces):
    model, _ = trained_cnn
    imgs = eval_faces.images[:10]
    p = ev.predict_proba(model, imgs, batch_size=4)
    ref = np.asarray(model(imgs[..., None].astype("float32"), training=False))
    assert p.dtype == np.float32 and p.shape == (10, 7)
    assert np.allclose(p, ref, atol=1e-5)
    flip = np.asarray(model(imgs[:, :, ::-1, None].astype("float32"), training=False))
    assert np.allclose(ev.predict_proba(model, imgs, tta=True), (ref + flip) / 2, atol=1e-5)

    report = ev.evaluate(model, eval_faces, split="val", tta=True)
    plain = ev.evaluate(model, eval_faces, split="val")
    assert report["tta"] is True and report["accuracy_no_tta"] == plain["accuracy"]
    assert report["tta_gain"] == pytest.approx(report["accuracy"] - plain["accuracy"], abs=1e-6)


def test_cli_and_api_agree(trained_cnn, eval_faces, tmp_path, capsys):
    from fer_core import data
    from fer_core.cli import main
    from fer_core.data.fer2013 import to_csv_bytes

    _, run = trained_cnn
    csv_path = tmp_path / "faces.csv"
    csv_path.write_bytes(to_csv_bytes(eval_faces.images, eval_faces.labels, eval_faces.split))
    assert main(["evaluate", "--model", str(run), "--data", str(csv_path), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = ev.evaluate(run, data.load(csv_path))
    for key in ("n", "accuracy", "top2_accuracy", "macro_f1", "per_class",
                "confusion_matrix", "labels", "ece", "split"):
        assert cli[key] == api[key], key
    assert cli["split"] == "test" and cli["model"] == "tiny-run" and cli["accuracy"] > 0.8

    # human output: a table naming every class
    assert main(["evaluate", "--model", str(run / "model.keras"), "--data", str(csv_path),
                 "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "macro F1" in out and all(n in out for n in FER7) and "[val]" in out


def test_cli_errors_are_clear(tmp_path, capsys, monkeypatch):
    from fer_core import resolve
    from fer_core.cli import main

    monkeypatch.delenv("FER_MODEL", raising=False)
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", tmp_path / "no-such-default")
    assert main(["evaluate", "--data", "demo", "--json"]) == 2
    err = capsys.readouterr().err
    assert "default model" in err and "no-such-default" in err

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    from fer_core.data.fer2013 import to_csv_bytes
    one = pattern_faces(n_per_class=1, splits=("test",))
    csv_path = tmp_path / "x.csv"
    csv_path.write_bytes(to_csv_bytes(one.images, one.labels, one.split))
    assert main(["evaluate", "--model", str(bad), "--data", str(csv_path)]) == 2
    assert "broken.keras" in capsys.readouterr().err


def test_default_split_rules(trained_cnn):
    model, _ = trained_cnn
    tv = pattern_faces(n_per_class=3, splits=("train", "val"))
    assert ev.evaluate(model, tv)["split"] == "val"
    with pytest.raises(FerError, match="no test or val split"):
        ev.evaluate(model, pattern_faces(n_per_class=3, splits=("train",)))
    assert ev.evaluate(model, tv, split="all")["n"] == 2 * 7 * 3


# ------------------------------------------------------------------ label-set mismatch

def test_merged6_model_on_fer7_data_is_remapped_explicitly(eval_faces, tmp_path):
    model6 = conv_pool_cnn(n_classes=6)
    report = ev.evaluate(model6, eval_faces)      # 6 outputs -> merged6 by size
    assert report["remapped"] == "fer7->merged6"
    assert report["labels"] == list(MERGED6) and len(report["confusion_matrix"]) == 6
    test = eval_faces.subset("test")
    n_angry = int(np.isin(test.labels, [0, 1]).sum())   # angry + disgust
    assert report["per_class"]["angry"]["support"] == n_angry
    assert report["n"] == len(test)


def test_finer_model_on_coarser_data_folds_outputs(trained_cnn, eval_faces):
    model, _ = trained_cnn
    merged = eval_faces.remap("merged6")
    report = ev.evaluate(model, merged)
    assert report["remapped"].startswith("fer7->merged6") and "folded" in report["remapped"]
    assert report["labels"] == list(MERGED6)
    assert report["accuracy"] > 0.8     # folding disgust into angry keeps it right


def test_an_8_output_model_without_labels_is_evaluated_as_ferplus8(eval_faces, tmp_path):
    run = tmp_path / "eight"
    run.mkdir()
    conv_pool_cnn(n_classes=8).save(run / "model.keras")   # no labels.json
    report = ev.evaluate(run, eval_faces)
    assert report["model_labels"] == list(FERPLUS8)
    assert report["remapped"] == "ferplus8->fer7 (model outputs folded)"
    assert report["labels"] == list(eval_faces.label_names)
    assert report["n"] == len(eval_faces.subset("test"))


def test_unmappable_mismatch_raises(eval_faces, tmp_path):
    run = tmp_path / "odd"
    run.mkdir()
    conv_pool_cnn(n_classes=3).save(run / "model.keras")
    (run / "labels.json").write_text(json.dumps({"labels": ["x", "y", "z"]}))
    with pytest.raises(FerError, match="cannot be mapped|no mapping"):
        ev.evaluate(run, eval_faces)
    (run / "labels.json").write_text(json.dumps({"labels": ["x", "y"]}))
    with pytest.raises(FerError, match="3 outputs"):
        ev.evaluate(run, eval_faces)
