"""Run directories: ids, atomic writes, list/load/rename/delete, safe model loading."""

import json
import os
import re

import numpy as np
import pytest

from fer_core import runs
from fer_core.errors import FerError


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.mark.parametrize("bad", ["../x", "a/b", "/etc", "", ".hidden", "a..b", "..",
                                 "a\\b", "x" * 200, "sp ace", "naïve"])
def test_bad_run_ids_rejected(bad, runs_root):
    with pytest.raises(FerError, match="run id"):
        runs.validate_run_id(bad)
    with pytest.raises(FerError):
        runs.load_run(bad) if "/" not in bad else runs.rename_run(runs_root / "r", bad)


@pytest.mark.parametrize("good", ["20240101-120000-vgg", "fer2013-default", "my_run.v2"])
def test_good_run_ids_accepted(good):
    assert runs.validate_run_id(good) == good


def test_new_run_id_is_readable_and_unique(runs_root):
    rid = runs.new_run_id("mini_xception", when=0)
    assert re.fullmatch(r"\d{8}-\d{6}-mini_xception", rid)
    (runs_root / rid).mkdir(parents=True)
    assert runs.new_run_id("mini_xception", when=0) == rid + "-2"
    assert runs.validate_run_id(runs.new_run_id("../../evil"))  # sanitised, still valid


def test_atomic_writes_leave_no_temp_files(tmp_path):
    runs.atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(2)})
    runs.append_jsonl(tmp_path / "h.jsonl", {"epoch": 1})
    runs.append_jsonl(tmp_path / "h.jsonl", {"epoch": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "y": [0, 1]}
    assert [r["epoch"] for r in runs.read_jsonl(tmp_path / "h.jsonl")] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "h.jsonl"]


def _tiny_model():
    from fer_core import architectures
    return architectures.build("vgg", n_classes=7, width=4, depth=1)


def _fake_run(root, run_id):
    d = root / run_id
    runs.atomic_write_json(d / "config.json", {"arch": "vgg"})
    runs.atomic_write_json(d / "labels.json", ["a", "b"])
    runs.write_metrics(d, {"best_val_accuracy": 0.5})
    runs.append_jsonl(d / "history.jsonl", {"epoch": 1, "val_accuracy": 0.5})
    return d


def test_list_load_rename_delete(runs_root):
    pytest.importorskip("keras")
    d = _fake_run(runs_root, "20240101-000000-vgg")
    model = _tiny_model()
    runs.save_model_atomic(model, d / runs.MODEL_FILE)
    (runs_root / "not-a-run").mkdir()
    listed = runs.list_runs()
    assert [r.id for r in listed] == ["20240101-000000-vgg"]
    run = runs.load_run("20240101-000000-vgg")
    assert run.labels == ["a", "b"] and run.history[0]["epoch"] == 1 and run.has_model
    loaded = runs.load_model("20240101-000000-vgg")
    x = np.zeros((1, 48, 48, 1), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    new = runs.rename_run("20240101-000000-vgg", "best-vgg")
    assert new == runs_root / "best-vgg" and not d.exists()
    _fake_run(runs_root, "other")
    with pytest.raises(FerError, match="already exists"):
        runs.rename_run("other", "best-vgg")
    runs.delete_run("best-vgg")
    assert not new.exists()
    with pytest.raises(FerError, match="not a run"):
        runs.delete_run("not-a-run")
    assert (runs_root / "not-a-run").exists()


def test_model_card_names_data_arch_and_hardware(tmp_path):
    text = runs.write_model_card(
        tmp_path, {"arch": "resnet", "arch_params": {}, "epochs": 3, "label_set": "fer7"},
        {"params": 1234, "flops": 5678, "best_val_accuracy": 0.7, "best_epoch": 2,
         "epochs_done": 3, "train_time_sec": 120, "labels": ["x"],
         "commands": ["python -m fer_core train fer2013.csv.gz --arch resnet"],
         "notes": ["renamed from models/old"]},
        {"source": "fer2013.csv.gz", "n_train": 10, "n_val": 5})
    for needle in ("fer2013.csv.gz", "resnet", "1,234", "0.7000", "CPU", "TensorFlow",
                   "Command: `python -m fer_core train fer2013.csv.gz --arch resnet`",
                   "- Note: renamed from models/old"):
        assert needle in text
    assert (tmp_path / "model_card.md").read_text() == text


def test_metrics_have_one_owner_with_a_schema_version(tmp_path):
    written = runs.write_metrics(tmp_path, {"status": "finished", "schema_version": 99})
    assert written["schema_version"] == runs.METRICS_SCHEMA
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    assert runs.read_metrics(tmp_path) == written
    assert runs.read_metrics(tmp_path / "none") == {}
    runs.atomic_write_json(tmp_path / "metrics.json", {"schema_version": 2, "status": "x"})
    with pytest.raises(FerError, match="schema version 2"):
        runs.read_metrics(tmp_path)
    runs.atomic_write_json(tmp_path / "metrics.json", ["not", "an", "object"])
    with pytest.raises(FerError, match="JSON object"):
        runs.read_metrics(tmp_path)


def test_committed_runs_are_on_the_current_metrics_schema():
    from fer_core import DEFAULT_MODEL, MODELS_DIR
    committed = [*MODELS_DIR.glob("*/metrics.json"), *DEFAULT_MODEL.parent.glob("*/metrics.json")]
    assert DEFAULT_MODEL / "metrics.json" in committed
    for metrics_file in committed:
        metrics = json.loads(metrics_file.read_text())
        assert metrics["schema_version"] == runs.METRICS_SCHEMA, metrics_file
        assert metrics["commands"] and metrics["machines"], metrics_file


def test_machines_of_and_with_machine_add_each_machine_once(tmp_path):
    a = {"cpu": "AMD EPYC", "cores": 2, "tensorflow": "2.21.0", "keras": "3.15.1", "gpus": 0}
    b = {**a, "cpu": "Intel Xeon"}
    assert runs.machines_of({}) == []
    assert runs.machines_of({"hardware": b, "machines": [a, b]}) == [a, b]
    assert runs.with_machine([a], {**a, "platform": "other kernel"}) == [a]  # same machine
    assert runs.with_machine([a], b) == [a, b]
    one = runs.write_model_card(tmp_path, {}, {"hardware": a}, {})
    assert "- CPU: AMD EPYC (2 cores)" in one and "Trained on" not in one
    two = runs.write_model_card(tmp_path, {}, {"hardware": b, "machines": [a, b]}, {})
    assert "Trained on 2 machines" in two
    assert two.index("AMD EPYC (2 cores)") < two.index("Intel Xeon (2 cores)")


def test_load_model_rejects_missing_and_non_keras_files(tmp_path):
    pytest.importorskip("keras")
    with pytest.raises(FerError, match="not found"):
        runs.load_model(tmp_path / "nothing.keras")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(FerError, match="not a Keras model file"):
        runs.load_model(txt)
    fake = tmp_path / "fake.keras"
    fake.write_bytes(os.urandom(256))
    with pytest.raises(FerError, match="not a valid .keras"):
        runs.load_model(fake)
    import zipfile
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("config.json", "{not json")
    with pytest.raises(FerError, match="cannot load model"):
        runs.load_model(broken)
    with pytest.raises(FerError, match="not found"):
        runs.load_model(tmp_path)  # a folder without model.keras


def test_model_card_states_the_calibration(tmp_path):
    """A regenerated card keeps the Calibration section (from calibration.json)."""
    import json
    import shutil

    from fer_core import DEFAULT_MODEL as src
    from fer_core import runs

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(src / "calibration.json", run / "calibration.json")
    config = json.loads((src / "config.json").read_text())
    metrics = runs.read_metrics(src)
    text = runs.write_model_card(run, config, metrics, metrics.get("data") or {})
    cal = json.loads((src / "calibration.json").read_text())
    assert "## Calibration" in text
    assert f"T = {cal['no_tta']['temperature']:.3f}" in text
    assert f"{cal['no_tta']['ece_before']:.3f} -> {cal['no_tta']['ece_after']:.3f}" in text
    (run / "calibration.json").unlink()
    assert "## Calibration" not in runs.write_model_card(run, config, metrics, {})
