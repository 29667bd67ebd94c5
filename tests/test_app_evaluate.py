"""Evaluate page (AppTest): a model trained in the test, evaluated on its own small data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import make_tiny_run, pattern_faces, save_model_dir, tiny_cnn, write_fer_csv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-app")
    run = make_tiny_run(root / "runs", "tiny-trained", epochs=6)
    other = make_tiny_run(root / "runs", "tiny-untrained", epochs=0, seed=1)
    csv = write_fer_csv(pattern_faces(n_per_class=12, seed=3, splits=("train", "val")),
                        root / "pattern.csv")
    return root, run, other, csv


def _app(monkeypatch, root, csv):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("FER_RUNS_DIR", str(root / "runs"))
    monkeypatch.delenv("FER_MODEL", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / "evaluate.py"), default_timeout=120)
    at.session_state["active_dataset"] = {"source": str(csv), "strict": True, "name": "pattern"}
    at.session_state["active_model"] = str(root / "runs" / "tiny-trained")
    return at


def test_evaluate_page_matches_core_and_shows_confusion_matrix(trained, monkeypatch):
    from fer_core import data, evaluation

    root, run, _, csv = trained
    at = _app(monkeypatch, root, csv).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    expected = evaluation.evaluate(run, data.load(str(csv)), split="val")
    assert expected["accuracy"] > 0.3, "the tiny model should have learned the bars"
    acc = next(m for m in at.metric if m.label == "Accuracy")
    assert acc.value == f"{expected['accuracy']:.1%}"
    charts = at.get("plotly_chart")
    assert charts, "no Plotly chart"
    import json
    cm = json.loads(charts[0].proto.spec)
    assert cm["data"][0]["type"] == "heatmap"
    assert cm["data"][0]["z"] == expected["confusion_matrix"]
    # the cell gallery follows the selectboxes (fallback for a click)
    at.selectbox(key="cm_true").set_value("happy")
    at.selectbox(key="cm_pred").set_value("happy").run()
    n_cell = int(np.asarray(expected["confusion_matrix"])[3, 3])
    assert any(f"True happy, predicted happy: {n_cell} faces" in m.value for m in at.markdown)
    assert len(at.get("download_button")) == 3


def test_what_it_sees_runs_only_when_its_tab_is_open(trained, monkeypatch):
    """Feature maps and Grad-CAM read the Keras model (a TensorFlow import in the app's server):
    not while another tab is open, and shown once "What it sees" is chosen."""
    from fer_core import explain

    root, _, _, csv = trained
    read = []
    real = explain.conv_layers
    monkeypatch.setattr(explain, "conv_layers", lambda model: read.append(model) or real(model))
    at = _app(monkeypatch, root, csv).run()
    assert not at.exception, at.exception
    assert read == [] and not any("Feature maps" in m.value for m in at.markdown)
    at.session_state["eval_tab"] = "What it sees"   # what a click on the tab sets
    at.run()
    assert not at.exception, at.exception
    assert read
    assert any(m.value.startswith("**Feature maps of ") for m in at.markdown)
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    assert any(c.startswith("Grad-CAM for the predicted class") for c in captions), captions


def test_evaluate_page_compare_and_tta(trained, monkeypatch):
    root, _, _, csv = trained
    at = _app(monkeypatch, root, csv).run()
    at.toggle(key="eval_cmp").set_value(True).run()
    at.toggle(key="eval_tta").set_value(True).run()
    assert not at.exception, at.exception
    acc = next(m for m in at.metric if m.label == "Accuracy")
    assert acc.delta not in (None, ""), "headline metrics show a delta against the other run"
    assert any(m.label == "TTA effect on accuracy" for m in at.metric)
    assert any("Per-class change" in m.value for m in at.markdown)


def test_evaluate_page_without_models_says_so(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from fer_core import resolve
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", tmp_path / "no-shipped-model")
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv("FER_MODEL", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / "evaluate.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("No default model yet" in i.value for i in at.info)


def test_evaluate_figures_plot_the_report():
    import pandas as pd

    from ui.figures import delta_figure, per_class_figure, reliability_figure, true_vs_pred_figure
    report = {"per_class": {"happy": {"precision": 0.9, "recall": 0.8, "f1": 0.85},
                            "sad": {"precision": 0.5, "recall": 0.6, "f1": 0.55}},
              "true_vs_pred": {"happy": {"true": 10, "pred": 12}, "sad": {"true": 7, "pred": 5}},
              "reliability": [{"lo": 0.0, "hi": 0.5, "count": 0, "accuracy": None},
                              {"lo": 0.5, "hi": 1.0, "count": 4, "accuracy": 0.75}],
              "ece": 0.125}
    bars = per_class_figure(report).data
    assert [b.name for b in bars] == ["precision", "recall", "f1"]
    assert list(bars[2].x) == ["happy", "sad"] and list(bars[2].y) == [0.85, 0.55]
    tvp = true_vs_pred_figure(report).data
    assert list(tvp[0].y) == [10, 7] and list(tvp[1].y) == [12, 5]
    rel = reliability_figure(report)
    assert list(rel.data[0].x) == [0.75] and list(rel.data[0].y) == [0.75]  # empty bin left out
    assert "ECE 0.125" in rel.layout.title.text
    delta = delta_figure(pd.Series({"happy": 0.1, "sad": -0.2}), "F1 change").data[0]
    assert list(delta.marker.color) == ["#2ca02c", "#d62728"]


def test_evaluate_page_takes_an_8_output_model_without_labels(trained, monkeypatch):

    root, _, _, csv = trained
    save_model_dir(root / "runs" / "eight-outputs", tiny_cnn(8))
    (root / "runs" / "eight-outputs" / "config.json").write_text("{}")
    at = _app(monkeypatch, root, csv)
    at.session_state["active_model"] = str(root / "runs" / "eight-outputs")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("ferplus8->fer7" in i.value for i in at.info), "the folding is said"
    assert any(m.label == "Accuracy" for m in at.metric)


def test_evaluate_page_shows_calibration_before_and_after(trained, monkeypatch):
    import json

    root, run, _, csv = trained
    cal = run / "calibration.json"
    cal.write_text(json.dumps({"temperature": 0.5, "temperature_tta": 0.5}))
    try:
        at = _app(monkeypatch, root, csv).run()
        assert not at.exception, at.exception
        text = " ".join(m.value for m in at.markdown)
        assert "T = 0.500" in text and "before" in text and "after" in text
        titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
                  for c in at.get("plotly_chart")]
        assert any(t.startswith("Reliability, before calibration") for t in titles)
        assert any(t.startswith("Reliability, calibrated, T=0.50") for t in titles)
    finally:
        cal.unlink()


def test_evaluate_page_explains_the_shipped_model_on_demo_faces(monkeypatch):
    """With the demo data active, the figures of a model trained on real faces come with why
    they are low, its model-card figures and how to load FER2013."""
    from streamlit.testing.v1 import AppTest

    import fer_core
    if not (fer_core.DEFAULT_MODEL / "model.keras").exists():
        pytest.skip("no shipped model")
    monkeypatch.delenv("FER_MODEL", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / "evaluate.py"), default_timeout=300)
    at.session_state["active_model"] = str(fer_core.DEFAULT_MODEL)
    at.run()
    assert not at.exception, at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "trained on real faces" in warning and "FER2013" in warning
    assert "68.1% accuracy" in warning and "fer2013.csv" in warning
