"""Stochastic weight averaging: snapshots in training, exact averaging, BatchNorm recalibration,
the swa command and its clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_core import runs, swa
from fer_core.errors import FerError
from fer_core.training import TrainConfig, apply_swa, train
from tests.factories import TINY_TRAIN as TINY, pattern_faces


@pytest.fixture(scope="module")
def faces():
    return pattern_faces(n_per_class=24, seed=5)


@pytest.fixture(scope="module")
def swa_run(faces, tmp_path_factory):
    """A 4-epoch run that keeps (and at the end averages) its last 3 epochs."""
    run_dir = tmp_path_factory.mktemp("swa") / "run"
    events = []
    result = train(faces, TrainConfig(**{**TINY, "epochs": 4, "swa_epochs": 3}), run_dir,
                   callbacks=[events.append])
    return run_dir, result, events


def _model(seed=0):
    from fer_core import architectures
    import keras
    keras.utils.set_random_seed(seed)
    return architectures.build("vgg", input_shape=(48, 48, 1), n_classes=7, width=8, depth=1)


def test_training_keeps_last_epochs_and_records_the_average(swa_run, faces):
    run_dir, result, events = swa_run
    assert sorted(swa.snapshots(run_dir)) == [2, 3, 4]           # epoch 1 is outside the window
    record = result["swa"]
    assert record["epochs"] == [2, 4] and record["n_snapshots"] == 3
    assert 0 <= record["val_accuracy"] <= 1 and record["replaced_val_accuracy"] > 0.5
    stages = [e.stage for e in events if e.type == "log" and e.topic == "swa"]
    assert stages == ["average", "batchnorm", "done"]
    assert stages and events[-1].type == "done"               # averaged before the end event
    # model.keras is whichever scored better, and the val report describes that model
    val = faces.subset("val")
    probs = runs.load_model(run_dir).predict(val.images[..., None], verbose=0)
    acc = float((probs.argmax(1) == val.labels).mean())
    expected = record["val_accuracy"] if record["used"] else record["replaced_val_accuracy"]
    assert acc == pytest.approx(expected, abs=1e-6)
    assert result["val_report"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert "Weight averaging (SWA) of epochs 2-4" in runs.load_run(run_dir).card


def test_average_weights_is_the_exact_mean(tmp_path):
    a, b = _model(1), _model(2)
    pa, pb = swa.save_snapshot(a, tmp_path, 1), swa.save_snapshot(b, tmp_path, 2)
    assert sorted(swa.snapshots(tmp_path)) == [1, 2] and pa.name == "epoch_0001.weights.h5"
    target = _model(3)
    swa.average_weights(target, [pa, pb])
    for wa, wb, wt in zip(a.get_weights(), b.get_weights(), target.get_weights()):
        np.testing.assert_allclose(wt, (wa + wb) / 2, rtol=1e-6, atol=1e-7)
    swa.prune_snapshots(tmp_path, first_epoch=2)
    assert sorted(swa.snapshots(tmp_path)) == [2]


def test_recalibrated_batchnorm_holds_the_data_statistics(faces):
    import keras
    model = _model(4)
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    momentum = bn.momentum
    images = faces.subset("train").images
    assert swa.recalibrate_batchnorm(model, images, batch_size=50) > 0
    # the first BatchNorm's input does not depend on any other BatchNorm: compare exactly
    feed = keras.Model(model.inputs, bn.input)
    x = feed.predict(images[..., None].astype(np.float32), verbose=0)
    axes = tuple(range(x.ndim - 1))
    np.testing.assert_allclose(np.asarray(bn.moving_mean), x.mean(axis=axes), rtol=1e-3,
                               atol=1e-3)
    # the mean of per-batch variances is close to (a little under) the overall variance
    np.testing.assert_allclose(np.asarray(bn.moving_variance), x.var(axis=axes), rtol=0.1,
                               atol=1e-3)
    assert bn.momentum == momentum and all(layer.rate > 0 for layer in dropout)  # settings restored


def test_swa_command_averages_another_window_and_updates_the_card(swa_run, faces, tmp_path,
                                                                   capsys):
    import shutil

    from fer_core.cli import main
    from fer_core.data.fer2013 import to_csv_bytes

    run_dir = tmp_path / "copy"
    shutil.copytree(swa_run[0], run_dir)
    csv = tmp_path / "faces.csv"
    csv.write_bytes(to_csv_bytes(faces.images, faces.labels, faces.split))
    assert main(["swa", str(csv), str(run_dir), "--from-epoch", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["epochs"] == [3, 4] and record["n_snapshots"] == 2
    metrics = runs.load_run(run_dir).metrics
    assert metrics["swa"] == record
    assert "Weight averaging (SWA) of epochs 3-4" in runs.load_run(run_dir).card
    if record["used"]:  # resuming must beat the average to replace model.keras
        state = json.loads((run_dir / "state.json").read_text())
        assert state["best_val_accuracy"] == pytest.approx(record["val_accuracy"], abs=1e-6)
    # a resume without averaging keeps the record of the average model.keras holds
    config = TrainConfig.from_dict({**json.loads((run_dir / "config.json").read_text()),
                                    "epochs": 5, "swa_epochs": 0})
    resumed = train(faces, config, run_dir, resume=True)
    assert resumed["epochs_done"] == 5
    if resumed["best_epoch"] == 5:  # epoch 5 beat the average and replaced model.keras
        assert resumed["swa"] == {**record, "used": False}
    else:
        assert resumed["swa"] == record
    record = resumed["swa"]
    # the same window again cannot beat the model it already made: a used record is kept
    again = apply_swa(faces, run_dir, first_epoch=3)
    metrics = runs.load_run(run_dir).metrics
    if record["used"]:
        assert not again["used"] and metrics["swa"] == record
        assert metrics["swa_tried"] == [again]
        assert "also averaged epochs 3-4" in runs.load_run(run_dir).card
    else:
        assert metrics["swa"] == again


def test_swa_errors_are_clear(swa_run, faces, tmp_path, capsys):
    from fer_core.cli import main

    with pytest.raises(FerError, match="at least 2 weight snapshots.*epochs 2-4"):
        apply_swa(faces, swa_run[0], first_epoch=4)
    with pytest.raises(FerError, match="not a training run"):
        apply_swa(faces, tmp_path)
    for bad in ({"swa_epochs": 1}, {"swa_epochs": 9}):
        with pytest.raises(FerError, match="swa_epochs"):
            TrainConfig(**{**TINY, "epochs": 4, **bad}).validate(faces)
    assert main(["swa", "demo-not-a-file.csv", str(tmp_path / "none")]) == 2
    assert "not a training run" in capsys.readouterr().err
    broken = tmp_path / "broken"
    swa.snapshot_path(broken, 1).parent.mkdir(parents=True)
    swa.snapshot_path(broken, 1).write_bytes(b"not hdf5")
    with pytest.raises(FerError, match="cannot load weight snapshot"):
        swa.average_weights(_model(), [swa.snapshot_path(broken, 1)])


def test_weight_average_records_keep_the_history():
    from fer_core.training import record_swa as _record_swa

    def rec(a, b, acc, used):
        return {"epochs": [a, b], "n_snapshots": b - a + 1, "val_accuracy": acc,
                "replaced_val_accuracy": 0.5, "used": used}
    metrics = {}
    _record_swa(metrics, first := rec(1, 4, 0.60, True))
    assert metrics == {"swa": first}
    _record_swa(metrics, worse := rec(2, 4, 0.58, False))   # model.keras still holds `first`
    assert metrics["swa"] == first and metrics["swa_tried"] == [worse]
    _record_swa(metrics, better := rec(5, 8, 0.62, True))   # displaces `first`, kept as history
    assert metrics["swa"] == better
    assert metrics["swa_tried"] == [worse, {**first, "used": False}]
    assert [r["used"] for r in metrics["swa_tried"]] == [False, False]
