"""The epoch loop: :func:`train` and the hooks that run after every epoch.

:func:`train` runs ``model.fit`` one epoch at a time, then evaluates on the val split, so that
a stop request (``stop_event.is_set()``, checked after every batch) ends training within one
batch without running validation. After each epoch the hooks run in order:

* :class:`BestModel`: ``model.keras`` = best val accuracy so far (weights only, small);
* :class:`Plateau`: halves the learning rate when val accuracy stalls (schedule "plateau");
* :class:`SwaSnapshots`: keeps the weights of the last ``swa_epochs`` epochs, averages them
  when the run finishes (:mod:`fer_core.swa`);
* :class:`Checkpoint`: ``last.keras`` with optimizer state and ``state.json`` (the cosine
  schedule is a function of the optimizer's step counter, so a resumed run continues it);
* :class:`History`: a row in ``history.jsonl`` and metrics.json / model card "running";
* :class:`TensorBoard`: scalars under ``tb/``;
* :class:`EarlyStop`: ends the run after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fer_core import runs, settings, swa
from fer_core.errors import FerError
from fer_core.job_events import Done, Log, Metric, Progress, Meter, eta
from fer_core.model_files import load_keras
from fer_core.training import summary
from fer_core.training.config import TrainConfig
from fer_core.training.pipeline import (choose_strategy, class_weights, current_lr,
                                        label_targets, make_augmenter, make_dataset,
                                        make_mixer, make_optimizer, make_schedule,
                                        train_targets)
from fer_core.training.state import RunState


@dataclass
class Loop:
    """Everything the epoch loop and its hooks share for one run."""

    config: TrainConfig
    run_dir: Path
    model: Any
    state: RunState
    ds: Any                      # the dataset in the run's label set
    train_ds: Any
    val_ds: Any
    train_data: Any              # tf.data pipelines
    val_data: Any
    emit: Callable[[dict], None]
    command: str = ""
    info: dict = field(default_factory=dict)        # params, flops, swa, val_report
    data_info: dict = field(default_factory=dict)

    def write_summary(self, status: str) -> dict:
        return summary.write_summary(self.run_dir, self.config, self.state, self.info,
                                     self.data_info, self.ds, status, self.command)


class Hook:
    """Runs after every epoch (may end the run by returning a status) and once at the end."""

    def epoch_end(self, loop: Loop, row: dict) -> str | None:
        return None

    def train_end(self, loop: Loop, status: str) -> None:
        return None


class BestModel(Hook):
    def epoch_end(self, loop, row):
        s = loop.state
        if s.best_val_accuracy is None or row["val_accuracy"] > s.best_val_accuracy:
            s.best_val_accuracy, s.best_epoch, s.wait, s.plateau_wait = \
                row["val_accuracy"], row["epoch"], 0, 0
            runs.save_model_atomic(loop.model, loop.run_dir / runs.MODEL_FILE,
                                   include_optimizer=False)
        else:
            s.wait += 1
            s.plateau_wait += 1
        row.update(best_val_accuracy=s.best_val_accuracy, best_epoch=s.best_epoch)


class Plateau(Hook):
    def __init__(self, patience: int, min_lr: float):
        self.patience, self.min_lr = patience, min_lr

    def epoch_end(self, loop, row):
        if loop.state.plateau_wait >= self.patience:
            optimizer = loop.model.optimizer
            optimizer.learning_rate = max(current_lr(optimizer) * 0.5, self.min_lr)
            loop.state.plateau_wait = 0


class SwaSnapshots(Hook):
    def __init__(self, first_epoch: int):
        self.first_epoch = first_epoch

    def epoch_end(self, loop, row):
        if row["epoch"] >= self.first_epoch:
            swa.save_snapshot(loop.model, loop.run_dir, row["epoch"])
            swa.prune_snapshots(loop.run_dir, self.first_epoch)

    def train_end(self, loop, status):
        if status != "finished":
            return
        record = swa.average_into_run(loop.run_dir, loop.train_ds, loop.val_ds,
                                      first_epoch=self.first_epoch, emit=loop.emit)
        loop.info["swa"] = record
        summary.adopt_swa(loop.state, record, loop.run_dir, loop.config.epochs)


class Checkpoint(Hook):
    def epoch_end(self, loop, row):
        runs.save_model_atomic(loop.model, loop.run_dir / runs.LAST_FILE, include_optimizer=True)
        loop.state.save(loop.run_dir, loop.config.epochs)


class History(Hook):
    def epoch_end(self, loop, row):
        runs.append_jsonl(loop.run_dir / "history.jsonl", row)
        loop.write_summary("running")


class TensorBoard(Hook):
    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")

    def __init__(self, run_dir: Path):
        import tensorflow as tf
        self.writer = tf.summary.create_file_writer(str(run_dir / "tb"))

    def epoch_end(self, loop, row):
        with self.writer.as_default():
            for key in self.KEYS:
                _tb_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def train_end(self, loop, status):
        self.writer.close()


class EarlyStop(Hook):
    def __init__(self, patience: int):
        self.patience = patience

    def epoch_end(self, loop, row):
        return "early_stopped" if loop.state.wait >= self.patience else None


def epoch_hooks(config: TrainConfig, run_dir: Path) -> list[Hook]:
    """The hooks of ``config``, in the order they run after an epoch."""
    hooks: list[Hook] = [BestModel()]
    if config.schedule == "plateau":
        hooks.append(Plateau(max(2, config.patience // 2) if config.patience else 3,
                             config.lr * 1e-3))
    if config.swa_epochs:
        hooks.append(SwaSnapshots(config.epochs - config.swa_epochs + 1))
    hooks += [Checkpoint(), History()]
    if config.tensorboard:
        hooks.append(TensorBoard(run_dir))
    if config.patience:
        hooks.append(EarlyStop(config.patience))
    return hooks


def _tb_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar without needing the tensorboard package (scalars plugin metadata)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=meta.SerializeToString())


# ----------------------------------------------------------------------------- train

def train(dataset, config: TrainConfig, run_dir, callbacks=(), stop_event=None,
          resume: bool = False, command: str = "") -> dict:
    """Train ``config`` on ``dataset`` (train split; val split for model choice) into
    ``run_dir``. Returns the summary written to metrics.json (``status`` is "finished",
    "stopped" or "early_stopped"). ``callbacks``: plain functions receive the events (see
    :mod:`fer_core.training`), ``keras.callbacks.Callback`` instances go to ``fit``.
    ``stop_event``: anything with ``is_set()``; training ends within a batch once it is set.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate(dataset)
    if not _is_chief():  # a non-chief worker's copy of the run is deleted when it ends
        with _scratch_dir() as scratch:
            return _train(dataset, config, Path(scratch), callbacks, stop_event, resume, command)
    with runs.run_lock(run_dir, "train --resume" if resume else "train"):  # one writer a run
        return _train(dataset, config, Path(run_dir), callbacks, stop_event, resume, command)


def _train(dataset, config: TrainConfig, run_dir: Path, callbacks, stop_event, resume: bool,
           command: str) -> dict:
    import keras

    _check_run_dir(run_dir, resume)
    sinks = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    keras_callbacks = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]

    def emit(event):
        for sink in sinks:
            sink(event)

    loop = _setup(dataset, config, run_dir, resume, emit, command)
    hooks = epoch_hooks(config, run_dir)
    status = _run_epochs(loop, hooks, stop_event, keras_callbacks)
    for hook in hooks:
        hook.train_end(loop, status)
    loop.info["val_report"] = summary.val_report(run_dir, loop.val_ds)
    metrics = loop.write_summary(status)
    emit(Done(**metrics))
    return metrics


def _is_chief() -> bool:
    tf_config = settings.tf_config()
    if not tf_config:
        return True
    task = json.loads(tf_config).get("task", {})
    return task.get("type") in (None, "chief") or (task.get("type") == "worker"
                                                   and task.get("index", 0) == 0)


def _scratch_dir():
    """Where a non-chief worker (MultiWorkerMirrored) writes its copy of the run: a temporary
    folder, removed on leaving the ``with`` block."""
    import tempfile
    return tempfile.TemporaryDirectory(prefix="fer-worker-", ignore_cleanup_errors=True)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / runs.LAST_FILE).exists() or not RunState.exists(run_dir):
            raise FerError("cannot resume: no last.keras/state.json checkpoint in the run "
                           "directory (it stopped before its first epoch ended, or they were "
                           "deleted)", where=str(run_dir))
    elif runs.read_jsonl(run_dir / "history.jsonl"):
        raise FerError("run directory already holds a trained run; pass resume=True "
                       "(CLI --resume) or choose a new directory", where=str(run_dir))


def _build_model(config: TrainConfig, n_classes: int, run_dir: Path, resume: bool,
                 planned_epochs, steps: int):
    """(model, augmenter, mixer) in the distribution strategy's scope: a new compiled model
    (optionally from ``init_from``'s weights), or the resume checkpoint."""
    import keras

    from fer_core import architectures

    with choose_strategy().scope():
        augmenter = make_augmenter(config)
        if resume:
            model = load_keras(run_dir / runs.LAST_FILE, compile=True)
            if planned_epochs != config.epochs and config.schedule == "cosine":
                model.optimizer.learning_rate = make_schedule(config, steps)
        else:
            model = architectures.build(config.arch, input_shape=(48, 48, 1), n_classes=n_classes,
                                 **config.arch_params)
            if config.init_from:
                from fer_core import transfer
                transfer.init_weights(model, config.init_from)
            model.compile(optimizer=make_optimizer(config, steps),
                          loss=keras.losses.CategoricalCrossentropy(
                              label_smoothing=config.label_smoothing),
                          metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        mixer = make_mixer(config)
    return model, augmenter, mixer


def _setup(dataset, config: TrainConfig, run_dir: Path, resume: bool, emit,
           command: str) -> Loop:
    """Seed, build (or reload) the model and the pipelines, then create the run directory."""
    import keras
    import tensorflow as tf

    from fer_core import architectures

    ds = dataset.remap(config.label_set) if config.label_set != dataset.label_set else dataset
    train_ds, val_ds = ds.subset("train"), ds.subset("val")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    steps = math.ceil(len(train_ds) / config.batch_size)
    state, planned_epochs = RunState.load(run_dir) if resume else (RunState(), None)
    model, augmenter, mixer = _build_model(config, ds.n_classes, run_dir, resume,
                                           planned_epochs, steps)
    weights = None
    if config.class_weight == "balanced":
        weights = class_weights(train_ds.labels, ds.n_classes)[train_ds.labels]
    train_data = make_dataset(train_ds.images, train_targets(config, train_ds), config.batch_size,
                              training=True, augmenter=augmenter, mixer=mixer, weights=weights,
                              seed=config.seed)
    val_data = make_dataset(val_ds.images, label_targets(val_ds, ds.n_classes),
                            max(config.batch_size, 256), training=False)
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the model and data are ready
    runs.atomic_write_json(run_dir / "config.json", config.to_dict())
    runs.atomic_write_json(run_dir / "labels.json", list(ds.label_names))
    return Loop(config=config, run_dir=run_dir, model=model, state=state, ds=ds,
                train_ds=train_ds, val_ds=val_ds, train_data=train_data, val_data=val_data,
                emit=emit, command=command,
                info={"params": int(model.count_params()), "flops": architectures.count_flops(model)},
                data_info={"source": ds.source, "synthetic": bool(ds.synthetic),
                           "n_train": len(train_ds), "n_val": len(val_ds)})


def _run_epochs(loop: Loop, hooks: list[Hook], stop_event, keras_callbacks) -> str:
    """Fit and validate epoch by epoch from the saved state; returns the run's status."""
    config, state = loop.config, loop.state
    steps = math.ceil(len(loop.train_ds) / config.batch_size)
    progress = _batch_progress(loop, steps, stop_event)
    loop.emit(Log(topic="train", stage="start", run_dir=str(loop.run_dir), arch=config.arch,
                  epochs=config.epochs, initial_epoch=state.epoch, batches=steps,
                  n_train=len(loop.train_ds), n_val=len(loop.val_ds), resumed=state.epoch > 0,
                  **loop.info))
    for epoch in range(state.epoch, config.epochs):
        if stop_event is not None and stop_event.is_set():
            return "stopped"
        progress.epoch = epoch
        t0 = time.perf_counter()
        hist = loop.model.fit(loop.train_data, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                              shuffle=False, callbacks=[progress, *keras_callbacks])
        t_train = time.perf_counter() - t0
        if progress.stopped:
            state.train_time_sec += t_train
            return "stopped"
        t1 = time.perf_counter()
        val = loop.model.evaluate(loop.val_data, verbose=0, return_dict=True)
        progress.val_sec = time.perf_counter() - t1
        epoch_time = time.perf_counter() - t0
        state.train_time_sec += epoch_time
        state.epoch = epoch + 1
        row = {"epoch": epoch + 1,
               "loss": float(hist.history["loss"][-1]),
               "accuracy": float(hist.history["accuracy"][-1]),
               "val_loss": float(val["loss"]), "val_accuracy": float(val["accuracy"]),
               "lr": current_lr(loop.model.optimizer),
               "images_per_sec": len(loop.train_ds) / max(t_train, 1e-9),
               "time_sec": epoch_time}
        status = None
        for hook in hooks:
            status = hook.epoch_end(loop, row) or status
        loop.emit(Metric(**row, epochs=config.epochs,
                         eta_sec=eta(epoch + 1, config.epochs, 1 / max(epoch_time, 1e-9))))
        if status:
            return status
    return "finished"


def _batch_progress(loop: Loop, steps: int, stop_event):
    """A Keras callback: per-batch events (rate, ETA) and the stop check inside ``fit``."""
    import keras

    batch_size, n_train, epochs = loop.config.batch_size, len(loop.train_ds), loop.config.epochs

    class BatchProgress(keras.callbacks.Callback):
        epoch, stopped, val_sec, rate = 0, False, 0.0, None

        def on_epoch_begin(self, epoch, logs=None):
            self.meter, self.seen = None, 0

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            now, b = time.perf_counter(), batch + 1
            if self.meter is None:  # exclude the first (tracing) batch from the rate
                self.meter = Meter()
                self.meter.update(0, now)
            else:
                self.seen += min(batch_size, n_train - batch * batch_size)
                self.rate = self.meter.update(self.seen, now)[0] or self.rate
            left = eta(self.epoch * steps + b, epochs * steps,
                       self.rate / batch_size if self.rate else None,
                       then=(epochs - self.epoch) * self.val_sec)
            loop.emit(Progress(done=b, total=steps, rate=self.rate, eta_sec=left, unit="batch",
                               epoch=self.epoch + 1, epochs=epochs,
                               loss=float(logs.get("loss", float("nan"))),
                               accuracy=float(logs.get("accuracy", float("nan"))),
                               lr=current_lr(self.model.optimizer), time=time.time()))
            if stop_event is not None and stop_event.is_set():
                self.stopped = True
                self.model.stop_training = True

    return BatchProgress()
