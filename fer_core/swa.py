"""Stochastic weight averaging (SWA) of a run's last epochs.

Averaging the weights that a run passes through over its last epochs finds a flatter, better
generalising point than any one of them (Izmailov et al., 2018). The averaged BatchNorm statistics
do not belong to the averaged weights, so they are recomputed on the training faces
(:func:`recalibrate_batchnorm`, as ``torch.optim.swa_utils.update_bn`` does).

- Training with ``TrainConfig.swa_epochs = N`` (CLI ``--swa-epochs N``) keeps the weights of each
  of the last N epochs in ``RUN_DIR/swa/epoch_NNNN.weights.h5`` (written atomically, kept across
  resumes) and averages them when the run finishes.
- ``python -m fer_core swa DATA RUN_DIR [--from-epoch A] [--to-epoch B]`` averages the snapshots
  a run holds (again, or over another window).

Either way :func:`average_into_run` replaces ``model.keras`` only when the average scores better on
the validation split than the model already there, and says what it did.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fer_core import atomic, runs
from fer_core.errors import FerError
from fer_core.job_events import Log

SNAPSHOT_DIR = "swa"
_SNAPSHOT = re.compile(r"^epoch_(\d+)\.weights\.h5$")

__all__ = ["SNAPSHOT_DIR", "snapshot_path", "snapshots", "save_snapshot", "prune_snapshots",
           "average_weights", "recalibrate_batchnorm", "average_into_run"]


def snapshot_path(run_dir, epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"epoch_{int(epoch):04d}.weights.h5"


def snapshots(run_dir) -> dict[int, Path]:
    """{epoch: path} of the weight snapshots a run holds, by epoch."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def save_snapshot(model, run_dir, epoch: int) -> Path:
    """Write the model's weights for ``epoch`` atomically."""
    path = snapshot_path(run_dir, epoch)
    with atomic.atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return path


def prune_snapshots(run_dir, first_epoch: int) -> None:
    """Delete the snapshots of epochs before ``first_epoch`` (outside the averaging window)."""
    for epoch, path in snapshots(run_dir).items():
        if epoch < first_epoch:
            path.unlink(missing_ok=True)


def average_weights(model, paths) -> None:
    """Load the mean of the weight files ``paths`` (all saved from ``model``'s architecture)."""
    paths = list(paths)
    if not paths:
        raise FerError("no weight snapshots to average", where="swa")
    total = None
    for p in paths:
        try:
            model.load_weights(p)
        except Exception as e:  # a snapshot of another architecture, or a damaged file
            raise FerError(f"cannot load weight snapshot: {type(e).__name__}: {str(e)[:200]}",
                           where=str(p)) from None
        w = model.get_weights()
        total = w if total is None else [t + x for t, x in zip(total, w)]
    model.set_weights([t / len(paths) for t in total])


def recalibrate_batchnorm(model, images: np.ndarray, batch_size: int = 256) -> int:
    """Recompute every BatchNormalization layer's moving mean and variance as the average over
    ``images`` (uint8 faces, N x 48 x 48) of the batch statistics, with dropout off.
    Returns the number of BatchNorm layers (0: nothing to do)."""
    import keras
    import tensorflow as tf

    from fer_core import evaluation

    layers = list(_all_layers(model))
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    drops = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved_m, saved_r = [layer.momentum for layer in bns], [layer.rate for layer in drops]
    x = evaluation.model_batch(model, images)
    sums = [[np.zeros(layer.moving_mean.shape, np.float64),
             np.zeros(layer.moving_variance.shape, np.float64)] for layer in bns]
    try:
        for layer in bns:
            layer.momentum = 0.0  # each call leaves exactly that batch's statistics
        for layer in drops:
            layer.rate = 0.0
        step = tf.function(lambda b: model(b, training=True), reduce_retracing=True)
        for s in range(0, len(x), batch_size):
            b = x[s:s + batch_size]
            step(tf.constant(b))
            for acc, layer in zip(sums, bns):
                acc[0] += len(b) * np.asarray(layer.moving_mean)
                acc[1] += len(b) * np.asarray(layer.moving_variance)
    finally:
        for layer, m in zip(bns, saved_m):
            layer.momentum = m
        for layer, r in zip(drops, saved_r):
            layer.rate = r
    for (mean, var), layer in zip(sums, bns):
        layer.moving_mean.assign((mean / len(x)).astype(np.float32))
        layer.moving_variance.assign((var / len(x)).astype(np.float32))
    return len(bns)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)


def _val_accuracy(model, val_ds) -> float:
    from fer_core import evaluation
    probs = evaluation.predict_proba(model, val_ds.images)
    return float((probs.argmax(1) == val_ds.labels).mean())


def average_into_run(run_dir, train_ds, val_ds, first_epoch: int | None = None,
                     last_epoch: int | None = None, emit=None) -> dict:
    """Average the run's snapshots of epochs first..last (default: all), recalibrate BatchNorm
    on ``train_ds``, score on ``val_ds`` and replace ``model.keras`` if the average is better
    than the model there. Returns the ``swa`` record for metrics.json."""
    run_dir = Path(run_dir)
    found = snapshots(run_dir)
    chosen = {e: p for e, p in found.items() if (first_epoch is None or e >= first_epoch)
              and (last_epoch is None or e <= last_epoch)}
    if len(chosen) < 2:
        have = f"epochs {min(found)}-{max(found)}" if found else "none"
        raise FerError(f"need at least 2 weight snapshots to average, found {len(chosen)} in "
                       f"the window (the run holds {have}; train with --swa-epochs N)",
                       where=str(run_dir / SNAPSHOT_DIR))
    if not runs.has_model(run_dir):
        raise FerError("the run has no model.keras to compare with", where=str(run_dir))
    emit = emit or (lambda e: None)
    model = runs.load_model(run_dir)
    before = _val_accuracy(model, val_ds)
    emit(Log(topic="swa", stage="average", epochs=sorted(chosen)))
    average_weights(model, chosen.values())
    emit(Log(topic="swa", stage="batchnorm", n_train=len(train_ds)))
    recalibrate_batchnorm(model, train_ds.images)
    after = _val_accuracy(model, val_ds)
    used = after > before
    if used:
        runs.save_model_atomic(model, run_dir / runs.MODEL_FILE, include_optimizer=False)
    record = {"epochs": [min(chosen), max(chosen)], "n_snapshots": len(chosen),
              "val_accuracy": round(after, 6), "replaced_val_accuracy": round(before, 6),
              "used": used}
    emit(Log(topic="swa", stage="done", **record))
    return record
