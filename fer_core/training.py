"""Training: :class:`TrainConfig`, :func:`train`, :class:`TrainingJob` and the job manager.

Pipeline
--------
``tf.data`` from the in-memory uint8 arrays: shuffle (seeded, reshuffled each epoch), batch,
augment whole batches with Keras preprocessing layers (flip, translation, rotation, zoom,
contrast, random erasing; train split only) with ``num_parallel_calls``, then optionally
MixUp or CutMix of faces and targets within the batch; targets are one-hot (or soft labels,
or mixed with the flip-averaged predictions of teacher models: distillation, see
:mod:`fer_core.transfer`), class weights as sample weights; prefetch. The model itself starts
with a Rescaling layer; ``init_from`` starts it from another model's weights.

Loop
----
:func:`train` runs ``model.fit`` one epoch at a time, then evaluates on the val split, so that
a stop request (a :class:`threading.Event` checked after every batch) ends training within one
batch without running validation, and so that every epoch is checkpointed atomically:
``model.keras`` = best val accuracy so far (weights only, small), ``last.keras`` = the latest
epoch with optimizer state (the cosine schedule is a function of the optimizer's step counter,
so a resumed run continues the schedule exactly), ``state.json`` and a row in ``history.jsonl``.
``train(..., resume=True)`` (or the CLI's ``--resume RUN_DIR``) picks up from ``last.keras``.
Resuming with more ``epochs`` than the run was started with rebuilds the cosine schedule over
the new total (the learning rate then continues from that longer curve at the current step).
With ``swa_epochs`` set, the weights of the last epochs are averaged at the end
(:mod:`fer_core.swa`; ``model.keras`` is replaced only if the average is better on val).

Events
------
Every callback in ``callbacks`` is called with plain dicts: ``{"type": "start", ...}``, per
batch ``{"type": "batch", "epoch", "epochs", "batch", "batches", "loss", "accuracy", "lr",
"images_per_sec", "eta_sec"}``, per epoch ``{"type": "epoch", ... "val_loss",
"val_accuracy", "time_sec", "best_val_accuracy", "best_epoch"}`` and ``{"type": "end",
"status", ...}``. ``keras.callbacks.Callback`` instances are passed to ``fit`` instead.

Determinism
-----------
``keras.utils.set_random_seed(config.seed)`` seeds Python, NumPy, TF and Keras (weights,
dropout, augmentation); shuffling uses the same seed. On CPU the same seed, data and config give
the same first-epoch metrics. ``TrainConfig.deterministic=True`` additionally calls
``tf.config.experimental.enable_op_determinism()`` (process-wide; slower; for GPU runs).

GPUs and clusters
-----------------
:func:`choose_strategy` picks the ``tf.distribute`` strategy automatically:

* ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy``. Start the same command on every worker
  with its own ``TF_CONFIG`` (``{"cluster": {"worker": ["host1:12345", "host2:12345"]},
  "task": {"type": "worker", "index": i}}``); worker 0 (the chief) writes the run directory,
  the others write to a scratch dir. ``batch_size`` is the global batch (split over workers).
* more than one GPU visible -> ``MirroredStrategy`` over all of them (``CUDA_VISIBLE_DEVICES``
  chooses which); scale ``batch_size`` and ``lr`` with the number of GPUs.
* otherwise the default strategy (one GPU if present, else the CPU).

On a GPU box install ``tensorflow[and-cuda]`` in place of the CPU wheel; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fer_core import labels as labelsets
from fer_core import runs, swa
from fer_core.errors import FerError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "plateau", "constant")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored as config.json in the run dir).

    Augmentation: ``flip`` horizontal flips; ``shift`` max translation (fraction of the size);
    ``rotation`` max degrees; ``zoom`` max zoom in/out fraction; ``contrast`` contrast factor;
    ``erasing`` probability of erasing a random rectangle (0 = off).
    ``weight_decay`` is decoupled (Keras AdamW/SGD: w -= lr * weight_decay * w each step).
    ``warmup_epochs`` linear LR warm-up (cosine schedule). ``patience`` epochs without val
    accuracy improvement before early stopping (0 = never). ``swa_epochs`` N >= 2 keeps the
    weights of the last N epochs and, when the run finishes, averages them (see
    :mod:`fer_core.swa`); 0 = off.
    ``mixup`` / ``cutmix``: the alpha of MixUp (blend two faces and their targets) or CutMix
    (paste a patch of another face, targets mixed by area) applied to every training batch
    after the other augmentation; 0 = off, one of the two at a time.
    ``init_from``: a run directory or .keras file of the same architecture whose weights start
    this run (a new optimizer and schedule; "" = random initialisation).
    ``teachers`` / ``distill``: knowledge distillation. The targets become
    ``(1 - distill) * label + distill * teacher`` where ``teacher`` is the mean flip-averaged
    prediction of the teacher models (run directories or .keras files) on each training face
    (:mod:`fer_core.transfer`).
    """

    arch: str = "vgg"
    arch_params: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    class_weight: str = "none"
    flip: bool = True
    shift: float = 0.1
    rotation: float = 10.0
    zoom: float = 0.1
    contrast: float = 0.2
    erasing: float = 0.25
    label_set: str = "fer7"
    seed: int = 42
    patience: int = 0
    swa_epochs: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0
    init_from: str = ""
    teachers: list = field(default_factory=list)
    distill: float = 0.0
    tensorboard: bool = False
    deterministic: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FerError(f"unknown setting(s) {unknown}; expected some of {sorted(names)}",
                           where="config")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, dataset=None) -> None:
        """Raise :class:`FerError` naming the field if the config (or the data for it) is bad."""
        from fer_core import models

        def bad(fld, msg):
            raise FerError(msg, where=fld)

        def number(fld, lo, hi, integer=False, lo_open=False):
            v = getattr(self, fld)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                    (integer and not isinstance(v, int)) or (isinstance(v, float)
                                                             and not math.isfinite(v)):
                bad(fld, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
            if v < lo or v > hi or (lo_open and v == lo):
                bad(fld, f"must be {'>' if lo_open else '>='} {lo} and <= {hi}, got {v!r}")

        if self.arch not in models.ARCHITECTURES:
            bad("arch", f"unknown architecture {self.arch!r}; expected one of "
                        f"{sorted(models.ARCHITECTURES)}")
        if not isinstance(self.arch_params, dict):
            bad("arch_params", f"expected a dict, got {type(self.arch_params).__name__}")
        allowed = models.arch_params(self.arch)
        unknown = sorted(set(self.arch_params) - set(allowed))
        if unknown:
            bad("arch_params", f"unknown parameter(s) {unknown} for {self.arch}; expected "
                               f"some of {sorted(allowed)}")
        number("epochs", 1, 100000, integer=True)
        number("batch_size", 1, 65536, integer=True)
        number("lr", 0, 10, lo_open=True)
        number("warmup_epochs", 0, 1000)
        number("weight_decay", 0, 1)
        number("label_smoothing", 0, 0.99)
        number("shift", 0, 0.5)
        number("rotation", 0, 180)
        number("zoom", 0, 0.9)
        number("contrast", 0, 1)
        number("erasing", 0, 1)
        number("patience", 0, 100000, integer=True)
        number("swa_epochs", 0, self.epochs if isinstance(self.epochs, int) else 0, integer=True)
        if self.swa_epochs == 1:
            bad("swa_epochs", "averaging needs at least 2 epochs (0 = off), got 1")
        number("seed", 0, 2**31 - 1, integer=True)
        number("mixup", 0, 10)
        number("cutmix", 0, 10)
        if self.mixup and self.cutmix:
            bad("cutmix", "use mixup or cutmix, not both")
        if (self.mixup or self.cutmix) and self.class_weight != "none":
            bad("class_weight", "class weights cannot follow faces that mixup/cutmix blend; "
                                "use class_weight 'none' with them")
        number("distill", 0, 1)
        if not isinstance(self.init_from, str):
            bad("init_from", f"expected a model path, got {self.init_from!r}")
        if self.init_from and not runs.has_model(self.init_from):
            bad("init_from", f"no model at {self.init_from!r} (expected a run directory with "
                             "model.keras or a .keras file)")
        if not isinstance(self.teachers, list) or \
                not all(isinstance(t, str) and t for t in self.teachers):
            bad("teachers", f"expected a list of model paths, got {self.teachers!r}")
        for t in self.teachers:
            if not runs.has_model(t):
                bad("teachers", f"no model at {t!r} (expected a run directory with "
                                "model.keras or a .keras file)")
        if bool(self.teachers) != bool(self.distill):
            bad("distill", "distillation needs both teachers and a distill weight > 0 "
                           f"(got {len(self.teachers)} teacher(s), distill {self.distill})")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            bad("class_weight", f"expected one of {CLASS_WEIGHTS}, got {self.class_weight!r}")
        if self.label_set not in labelsets.LABEL_SETS:
            bad("label_set", f"expected one of {sorted(labelsets.LABEL_SETS)}, "
                             f"got {self.label_set!r}")
        for fld in ("flip", "tensorboard", "deterministic"):
            if not isinstance(getattr(self, fld), bool):
                bad(fld, f"expected true/false, got {getattr(self, fld)!r}")
        if dataset is None:
            return
        n_train = int(np.sum(dataset.split == "train"))
        n_val = int(np.sum(dataset.split == "val"))
        if n_train == 0:
            bad("dataset", f"the train split of {dataset.source or 'the dataset'} is empty; "
                           "training needs faces in the 'train' split")
        if n_val == 0:
            bad("dataset", f"the val split of {dataset.source or 'the dataset'} is empty; "
                           "training needs faces in the 'val' split to choose the best model")
        if self.batch_size > n_train:
            bad("batch_size", f"{self.batch_size} is larger than the train split "
                              f"({n_train} faces)")
        if self.label_set != dataset.label_set:
            try:
                labelsets.remap_table(dataset.label_set, self.label_set)
            except FerError as e:
                bad("label_set", str(e))


# ----------------------------------------------------------------------------- pipeline

def choose_strategy():
    """MultiWorkerMirrored if TF_CONFIG is set, Mirrored if >1 GPU, else the default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_augmenter(config: TrainConfig, seed: int | None = None):
    """A train-only keras.Sequential of preprocessing layers (None when all are off).

    Works on float batches (B, 48, 48, 1) with values 0..255."""
    import keras
    from keras import layers

    seed = config.seed if seed is None else seed
    aug = []
    if config.flip:
        aug.append(layers.RandomFlip("horizontal", seed=seed + 1))
    if config.rotation:
        aug.append(layers.RandomRotation(config.rotation / 360.0, fill_mode="reflect",
                                         seed=seed + 2))
    if config.zoom:
        aug.append(layers.RandomZoom((-config.zoom, config.zoom), fill_mode="reflect",
                                     seed=seed + 3))
    if config.shift:
        aug.append(layers.RandomTranslation(config.shift, config.shift, fill_mode="reflect",
                                            seed=seed + 4))
    if config.contrast:
        aug.append(layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 5))
    if config.erasing:
        aug.append(layers.RandomErasing(factor=config.erasing, scale=(0.02, 0.15),
                                        value_range=(0, 255), seed=seed + 6))
    if not aug:
        return None
    return keras.Sequential(aug, name="augmentation")


def make_mixer(config: TrainConfig, seed: int | None = None):
    """The batch-level MixUp or CutMix layer of ``config`` (None when both are off)."""
    from keras import layers

    seed = config.seed if seed is None else seed
    if config.mixup:
        return layers.MixUp(alpha=config.mixup, seed=seed + 7)
    if config.cutmix:
        return layers.CutMix(factor=config.cutmix, seed=seed + 8)
    return None


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """'balanced' weights n / (k * count_c) (0 for absent classes)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def make_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, *, training: bool,
                 augmenter=None, mixer=None, weights: np.ndarray | None = None, seed: int = 0,
                 deterministic: bool = True):
    """tf.data pipeline from uint8 (N,48,48) faces and float targets (N,C); in training,
    ``augmenter`` transforms each batch of faces, then ``mixer`` (MixUp/CutMix) blends faces
    and targets within the batch (not with sample ``weights``)."""
    import tensorflow as tf

    x = images[..., None] if images.ndim == 3 else images
    tensors = (x, targets) if weights is None else (x, targets, weights)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def cast(x, *rest):
        return (tf.cast(x, tf.float32), *rest)

    ds = ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if training and augmenter is not None:
        def augment(x, *rest):
            return (augmenter(x, training=True), *rest)
        # Keras random layers draw from a stateful seed generator: parallel calls would take
        # the draws in a nondeterministic order, so the (vectorised, per-batch) augmentation
        # runs as one sequential stage, overlapped with training by prefetch.
        ds = ds.map(augment, num_parallel_calls=None if deterministic else tf.data.AUTOTUNE)
    if training and mixer is not None:
        if weights is not None:
            raise FerError("mixup/cutmix cannot carry sample weights", where="class_weight")

        def mix(x, y):
            out = mixer({"images": x, "labels": y}, training=True)
            return out["images"], out["labels"]
        ds = ds.map(mix, num_parallel_calls=None if deterministic else tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _targets(ds, n_classes: int) -> np.ndarray:
    if ds.soft_labels is not None:
        t = np.asarray(ds.soft_labels, dtype=np.float32)
        return t / np.maximum(t.sum(axis=1, keepdims=True), 1e-9)
    return np.eye(n_classes, dtype=np.float32)[ds.labels]


def train_targets(config: TrainConfig, train_ds) -> np.ndarray:
    """The training targets: the labels (one-hot or soft), mixed with the teachers'
    predictions when ``config.distill`` is set."""
    from fer_core import transfer

    targets = _targets(train_ds, train_ds.n_classes)
    if not config.distill:
        return targets
    teacher = transfer.teacher_targets(config.teachers, train_ds.images, train_ds.label_names)
    return ((1.0 - config.distill) * targets + config.distill * teacher).astype(np.float32)


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """The learning rate (schedule) for the optimizer: cosine with linear warm-up, or a float
    (constant / plateau, where the plateau logic lowers it between epochs)."""
    import keras

    if config.schedule != "cosine":
        return float(config.lr)
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(min(config.warmup_epochs * steps_per_epoch, total - 1))
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.lr * 0.01, decay_steps=max(1, total - warmup),
            alpha=0.01, warmup_target=config.lr, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total, alpha=0.01)


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    lr = make_schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay or None)


def current_lr(optimizer) -> float:
    import keras
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# ----------------------------------------------------------------------------- callbacks

def _make_batch_callback(emit, stop_event, state):
    import keras

    class _Progress(keras.callbacks.Callback):
        """Per-batch events + the stop check (runs inside model.fit)."""

        def on_epoch_begin(self, epoch, logs=None):
            state["t_epoch"] = time.perf_counter()
            state["t_first"] = None
            state["seen"] = 0

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            now = time.perf_counter()
            b = batch + 1
            size = min(state["batch_size"], state["n_train"] - batch * state["batch_size"])
            if state["t_first"] is None:   # exclude the first (tracing) batch from the rate
                state["t_first"], state["seen"] = now, 0
                rate = None
            else:
                state["seen"] += size
                rate = state["seen"] / max(now - state["t_first"], 1e-9)
            if rate:
                state["rate"] = rate
            rate = rate or state.get("rate")
            remaining = (state["batches"] - b) + (state["epochs"] - state["epoch"] - 1) * \
                state["batches"]
            eta = None
            if rate:
                eta = remaining * state["batch_size"] / rate + \
                    (state["epochs"] - state["epoch"]) * state.get("val_sec", 0.0)
            emit({"type": "batch", "epoch": state["epoch"] + 1, "epochs": state["epochs"],
                  "batch": b, "batches": state["batches"],
                  "loss": float(logs.get("loss", float("nan"))),
                  "accuracy": float(logs.get("accuracy", float("nan"))),
                  "lr": current_lr(self.model.optimizer),
                  "images_per_sec": rate, "eta_sec": eta, "time": time.time()})
            if stop_event is not None and stop_event.is_set():
                state["stopped"] = True
                self.model.stop_training = True

    return _Progress()


# ----------------------------------------------------------------------------- train

def _is_chief() -> bool:
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return True
    task = json.loads(tf_config).get("task", {})
    return task.get("type") in (None, "chief") or (task.get("type") == "worker"
                                                   and task.get("index", 0) == 0)


def train(dataset, config: TrainConfig, run_dir, callbacks=(), stop_event=None,
          resume: bool = False, command: str = "") -> dict:
    """Train ``config`` on ``dataset`` (train split; val split for model choice) into
    ``run_dir``. Returns the summary written to metrics.json (``status`` is "finished",
    "stopped" or "early_stopped"). See the module docstring for events and checkpoints.
    """
    import keras
    import tensorflow as tf

    from fer_core import models

    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate(dataset)
    run_dir = Path(run_dir)
    if not _is_chief():  # non-chief workers write to a scratch dir (MultiWorkerMirrored)
        import tempfile
        run_dir = Path(tempfile.mkdtemp(prefix="fer-worker-"))
    state_path = run_dir / "state.json"
    if resume:
        if not (run_dir / runs.LAST_FILE).exists() or not state_path.exists():
            raise FerError("cannot resume: no last.keras/state.json checkpoint in the run "
                           "directory (was it trained with this version, or deleted?)",
                           where=str(run_dir))
    elif (run_dir / "history.jsonl").exists() and runs.read_jsonl(run_dir / "history.jsonl"):
        raise FerError("run directory already holds a trained run; pass resume=True "
                       "(CLI --resume) or choose a new directory", where=str(run_dir))

    sinks = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
    keras_callbacks = [c for c in callbacks if isinstance(c, keras.callbacks.Callback)]

    def emit(event):
        for cb in sinks:
            cb(event)

    ds = dataset.remap(config.label_set) if config.label_set != dataset.label_set else dataset
    train_ds, val_ds = ds.subset("train"), ds.subset("val")
    n_classes = ds.n_classes
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    steps = math.ceil(len(train_ds) / config.batch_size)
    weights = None
    if config.class_weight == "balanced":
        weights = class_weights(train_ds.labels, n_classes)[train_ds.labels]
    strategy = choose_strategy()
    with strategy.scope():
        augmenter = make_augmenter(config)
        if resume:
            model = _load_checkpoint(run_dir / runs.LAST_FILE)
            saved = json.loads(state_path.read_text())
            if saved.get("epochs") != config.epochs and config.schedule == "cosine":
                model.optimizer.learning_rate = make_schedule(config, steps)
        else:
            model = models.build(config.arch, input_shape=(48, 48, 1), n_classes=n_classes,
                                 **config.arch_params)
            if config.init_from:
                from fer_core import transfer
                transfer.init_weights(model, config.init_from)
            model.compile(optimizer=make_optimizer(config, steps),
                          loss=keras.losses.CategoricalCrossentropy(
                              label_smoothing=config.label_smoothing),
                          metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        mixer = make_mixer(config)
    train_data = make_dataset(train_ds.images, train_targets(config, train_ds), config.batch_size,
                              training=True, augmenter=augmenter, mixer=mixer, weights=weights,
                              seed=config.seed)
    val_data = make_dataset(val_ds.images, _targets(val_ds, n_classes),
                            max(config.batch_size, 256), training=False)

    st = {"epoch": 0, "best_val_accuracy": None, "best_epoch": None, "wait": 0,
          "plateau_wait": 0, "train_time_sec": 0.0}
    if resume:
        st.update({k: v for k, v in saved.items() if k in st})
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the model and data are ready
    runs.atomic_write_json(run_dir / "config.json", config.to_dict())
    runs.atomic_write_json(run_dir / "labels.json", list(ds.label_names))
    info = {"params": int(model.count_params()), "flops": models.count_flops(model)}
    data_info = {"source": ds.source, "synthetic": bool(ds.synthetic),
                 "n_train": len(train_ds), "n_val": len(val_ds)}

    tb_writer = None
    if config.tensorboard:
        tb_writer = tf.summary.create_file_writer(str(run_dir / "tb"))

    cb_state = {"batch_size": config.batch_size, "n_train": len(train_ds), "batches": steps,
                "epochs": config.epochs, "epoch": st["epoch"], "stopped": False}
    progress = _make_batch_callback(emit, stop_event, cb_state)
    emit({"type": "start", "run_dir": str(run_dir), "arch": config.arch, "epochs": config.epochs,
          "initial_epoch": st["epoch"], "batches": steps, "n_train": len(train_ds),
          "n_val": len(val_ds), "resumed": bool(resume), **info})
    status = "finished"
    plateau_patience = max(2, config.patience // 2) if config.patience else 3
    for epoch in range(st["epoch"], config.epochs):
        if stop_event is not None and stop_event.is_set():
            status = "stopped"
            break
        cb_state["epoch"] = epoch
        t0 = time.perf_counter()
        hist = model.fit(train_data, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                         shuffle=False, callbacks=[progress, *keras_callbacks])
        t_train = time.perf_counter() - t0
        if cb_state["stopped"]:
            st["train_time_sec"] += t_train
            status = "stopped"
            break
        t1 = time.perf_counter()
        val = model.evaluate(val_data, verbose=0, return_dict=True)
        cb_state["val_sec"] = time.perf_counter() - t1
        epoch_time = time.perf_counter() - t0
        st["train_time_sec"] += epoch_time
        row = {"epoch": epoch + 1,
               "loss": float(hist.history["loss"][-1]),
               "accuracy": float(hist.history["accuracy"][-1]),
               "val_loss": float(val["loss"]), "val_accuracy": float(val["accuracy"]),
               "lr": current_lr(model.optimizer),
               "images_per_sec": len(train_ds) / max(t_train, 1e-9),
               "time_sec": epoch_time}
        improved = st["best_val_accuracy"] is None or row["val_accuracy"] > st["best_val_accuracy"]
        if improved:
            st.update(best_val_accuracy=row["val_accuracy"], best_epoch=epoch + 1, wait=0,
                      plateau_wait=0)
            runs.save_model_atomic(model, run_dir / runs.MODEL_FILE, include_optimizer=False)
        else:
            st["wait"] += 1
            st["plateau_wait"] += 1
        if config.schedule == "plateau" and st["plateau_wait"] >= plateau_patience:
            new_lr = max(current_lr(model.optimizer) * 0.5, config.lr * 1e-3)
            model.optimizer.learning_rate = new_lr
            st["plateau_wait"] = 0
        st["epoch"] = epoch + 1
        row.update(best_val_accuracy=st["best_val_accuracy"], best_epoch=st["best_epoch"])
        if config.swa_epochs and epoch + 1 > config.epochs - config.swa_epochs:
            swa.save_snapshot(model, run_dir, epoch + 1)
            swa.prune_snapshots(run_dir, config.epochs - config.swa_epochs + 1)
        runs.save_model_atomic(model, run_dir / runs.LAST_FILE, include_optimizer=True)
        runs.atomic_write_json(state_path, {**st, "epochs": config.epochs})
        runs.append_jsonl(run_dir / "history.jsonl", row)
        if tb_writer is not None:
            with tb_writer.as_default():
                for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
                    _tb_scalar(k, row[k], epoch + 1)
            tb_writer.flush()
        _write_summary(run_dir, config, st, info, data_info, ds, "running", command)
        emit({"type": "epoch", "epochs": config.epochs, "eta_sec":
              (config.epochs - epoch - 1) * epoch_time, **row})
        if config.patience and st["wait"] >= config.patience:
            status = "early_stopped"
            break
    if config.swa_epochs and status == "finished":
        info["swa"] = swa.average_into_run(run_dir, train_ds, val_ds,
                                           first_epoch=config.epochs - config.swa_epochs + 1,
                                           emit=emit)
        _adopt_swa(st, info["swa"], state_path, config.epochs)
    info["val_report"] = _val_report(run_dir, val_ds)
    metrics = _write_summary(run_dir, config, st, info, data_info, ds, status, command)
    if tb_writer is not None:
        tb_writer.close()
    emit({"type": "end", **metrics})
    return metrics


def _tb_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar without needing the tensorboard package (scalars plugin metadata)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=meta.SerializeToString())


def _load_checkpoint(path: Path):
    import keras
    try:
        return keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as e:
        raise FerError(f"cannot load checkpoint: {type(e).__name__}: {str(e)[:300]}",
                       where=str(path)) from None


def _val_report(run_dir: Path, val_ds) -> dict | None:
    """Accuracy, macro-F1 and per-class precision/recall/F1 of the best model on val (for
    metrics.json and the model card); None when no best model was saved."""
    from fer_core import evaluation

    if not runs.has_model(run_dir):
        return None
    model = runs.load_model(run_dir)
    rep = evaluation.metrics(val_ds.labels, evaluation.predict_proba(model, val_ds.images),
                             val_ds.label_names)
    return {k: rep[k] for k in ("n", "accuracy", "top2_accuracy", "macro_f1", "per_class")}


def _adopt_swa(st: dict, record: dict, state_path: Path, epochs) -> bool:
    """If the average became model.keras, it is the run's best from now on (its val accuracy,
    at the window's last epoch), so a resumed epoch must beat it to replace model.keras."""
    if not record["used"]:
        return False
    st.update(best_val_accuracy=record["val_accuracy"], best_epoch=record["epochs"][1])
    runs.atomic_write_json(state_path, {**st, "epochs": epochs})
    return True


def run_config(run_dir) -> TrainConfig:
    """The TrainConfig of a finished or stopped run (FerError if it is not a training run)."""
    run_dir = runs.run_path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "metrics.json").exists():
        raise FerError("not a training run (no config.json/metrics.json)", where=str(run_dir))
    try:
        return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (ValueError, TypeError) as e:
        raise FerError(f"unreadable config.json: {e}", where=str(run_dir)) from None


def apply_swa(dataset, run_dir, first_epoch: int | None = None, last_epoch: int | None = None,
              command: str = "", emit=None) -> dict:
    """Average a finished run's weight snapshots (:func:`fer_core.swa.average_into_run`) and
    record the result in its metrics.json and model card. Returns the ``swa`` record."""
    run_dir = runs.run_path(run_dir)
    config = run_config(run_dir)
    ds = dataset.remap(config.label_set) if config.label_set != dataset.label_set else dataset
    val_ds = ds.subset("val")
    if len(val_ds) == 0:
        raise FerError("the data has no val split to compare the average on", where="data")
    record = swa.average_into_run(run_dir, ds.subset("train"), val_ds, first_epoch, last_epoch,
                                  emit=emit)
    metrics = runs.load_run(run_dir).metrics
    state_path = run_dir / "state.json"
    if state_path.exists():
        st = json.loads(state_path.read_text())
        if _adopt_swa(st, record, state_path, st.get("epochs")):
            metrics.update(best_val_accuracy=st["best_val_accuracy"], best_epoch=st["best_epoch"])
    _record_swa(metrics, record)
    metrics["sources"] = _sources(config, metrics)
    if record["used"]:
        metrics["val_report"] = _val_report(run_dir, val_ds)
    if command and command not in metrics.get("commands", []):
        metrics["commands"] = [*metrics.get("commands", []), command]
    runs.atomic_write_json(run_dir / "metrics.json", metrics)
    runs.write_model_card(run_dir, config.to_dict(), metrics, metrics.get("data") or {})
    return record


def _record_swa(metrics: dict, record: dict) -> None:
    """Enter a new weight average in ``metrics``. It becomes ``swa`` when kept, or when no kept
    average is on record; the record it displaces moves to ``swa_tried`` (marked unused). A
    worse average joins ``swa_tried`` and leaves the record of the one model.keras holds."""
    current = metrics.get("swa")
    if record["used"] or not (current or {}).get("used"):
        if current:
            metrics["swa_tried"] = [*metrics.get("swa_tried", []), {**current, "used": False}]
        metrics["swa"] = record
    else:
        metrics["swa_tried"] = [*metrics.get("swa_tried", []), record]


def _sources(config: TrainConfig, metrics: dict) -> list[dict]:
    """The starting weights and teachers of a run with the commands that made them, as
    recorded when it began (``metrics["sources"]``), else as they are now."""
    if metrics.get("sources"):
        return metrics["sources"]
    models = dict.fromkeys(m for m in (config.init_from, *config.teachers) if m)
    return [{"model": m, "commands": runs.model_commands(m)} for m in models]


def _write_summary(run_dir, config, st, info, data_info, ds, status, command) -> dict:
    metrics = {"status": status, "arch": config.arch, "epochs": config.epochs,
               "epochs_done": st["epoch"], "best_val_accuracy": st["best_val_accuracy"],
               "best_epoch": st["best_epoch"], "train_time_sec": st["train_time_sec"],
               "labels": list(ds.label_names), "label_set": ds.label_set,
               "data": data_info, **info, "hardware": runs.hardware(),
               "has_model": (Path(run_dir) / runs.MODEL_FILE).exists(),
               "run_dir": str(run_dir)}
    # Every command that trained this run, in order (the first train, then each resume).
    old = runs.load_run(run_dir).metrics if (Path(run_dir) / "metrics.json").exists() else {}
    metrics["machines"] = runs.with_machine(runs.machines_of(old), metrics["hardware"])
    commands = runs.commands_of(old)
    if command and command not in commands:
        commands.append(command)
    metrics["commands"] = commands
    metrics["sources"] = _sources(config, old)
    if old.get("notes"):  # notes added by hand (e.g. on a renamed run) stay
        metrics["notes"] = old["notes"]
    record = metrics.pop("swa", None)  # this run's average, if it made one
    for key in ("swa", "swa_tried"):  # weight averages made before a resume still hold
        if key in old:
            metrics[key] = old[key]
    if record is not None:
        _record_swa(metrics, record)
    elif (metrics.get("swa") or {}).get("used") and \
            (st["best_epoch"] or 0) > metrics["swa"]["epochs"][1]:
        metrics["swa"] = {**metrics["swa"], "used": False}  # a later epoch beat the average
    runs.atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    runs.write_model_card(run_dir, config.to_dict(), metrics, data_info)
    return metrics


# ----------------------------------------------------------------------------- jobs

class TrainingJob:
    """:func:`train` in a daemon worker thread, with a thread-safe event queue and stop event.

    ``status``: "pending", "running", "finished", "stopped", "early_stopped" or "failed";
    ``error``: the failure as text (FerError message, or exception + traceback tail).
    Any thread may call :meth:`drain`, :meth:`history`, :meth:`latest`, :meth:`stop`.
    """

    def __init__(self, dataset, config: TrainConfig, run_dir, resume: bool = False,
                 callbacks=()):
        self.dataset, self.config, self.run_dir = dataset, config, Path(run_dir)
        self.resume = resume
        self.events: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._history: list[dict] = []
        self._latest: dict | None = None
        self._start: dict | None = None
        self._callbacks = list(callbacks)
        self.status = "pending"
        self.error: str | None = None
        self.result: dict | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="fer-training", daemon=True)

    def _on_event(self, event: dict) -> None:
        with self._lock:
            if event["type"] == "epoch":
                self._history.append(event)
            elif event["type"] == "start":
                self._start = event
            self._latest = event if event["type"] == "batch" else self._latest
        self.events.put(event)

    def _run(self) -> None:
        try:
            import keras
            keras_cbs = [c for c in self._callbacks if isinstance(c, keras.callbacks.Callback)]
            sinks = [self._on_event] + [c for c in self._callbacks if c not in keras_cbs]
            result = train(self.dataset, self.config, self.run_dir,
                           callbacks=sinks + keras_cbs, stop_event=self.stop_event,
                           resume=self.resume)
            with self._lock:
                self.result = result
                self.status = result["status"]
        except FerError as e:
            with self._lock:
                self.status, self.error = "failed", str(e)
        except Exception as e:  # report, never crash the server thread
            tb = traceback.format_exc(limit=4)
            with self._lock:
                self.status, self.error = "failed", f"{type(e).__name__}: {e}\n{tb}"
        finally:
            self.finished_at = time.time()
            self.events.put({"type": "done", "status": self.status, "error": self.error})

    def start(self) -> "TrainingJob":
        self.status = "running"
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done (or timeout); True if finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def drain(self, max_events: int | None = None) -> list[dict]:
        """Events queued since the last drain (for one consumer)."""
        out = []
        while max_events is None or len(out) < max_events:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def history(self) -> list[dict]:
        """Per-epoch rows so far (including, after a resume, the earlier epochs on disk)."""
        with self._lock:
            rows = list(self._history)
        if self.resume:
            done = {r["epoch"] for r in rows}
            earlier = [r for r in runs.read_jsonl(self.run_dir / "history.jsonl")
                       if r.get("epoch") not in done]
            rows = sorted(earlier + rows, key=lambda r: r["epoch"])
        return rows

    def latest(self) -> dict | None:
        """The latest per-batch event."""
        with self._lock:
            return None if self._latest is None else dict(self._latest)

    def snapshot(self) -> dict:
        """Status, error, start info, latest batch event, history: one consistent view."""
        with self._lock:
            return {"status": self.status, "error": self.error, "run_dir": str(self.run_dir),
                    "config": self.config.to_dict(), "start": self._start,
                    "latest": self._latest, "result": self.result,
                    "started_at": self.started_at, "finished_at": self.finished_at,
                    "history": list(self._history)}


class JobManager:
    """Process-wide owner of at most one running :class:`TrainingJob` (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: TrainingJob | None = None

    def start(self, dataset, config: TrainConfig, run_dir, resume: bool = False,
              callbacks=()) -> TrainingJob:
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        config.validate(dataset)  # refuse bad configs in the caller's thread
        with self._lock:
            if self._job is not None and self._job.running:
                raise FerError(f"a training job is already running ({self._job.run_dir.name}, "
                               f"{self._job.config.arch}); stop it or wait until it ends",
                               where="training", status=409)
            self._job = TrainingJob(dataset, config, run_dir, resume=resume,
                                    callbacks=callbacks).start()
            return self._job

    @property
    def job(self) -> TrainingJob | None:
        """The current or most recent job (None before the first)."""
        with self._lock:
            return self._job

    def stop(self) -> bool:
        with self._lock:
            job = self._job
        if job is not None and job.running:
            job.stop()
            return True
        return False


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def job_manager() -> JobManager:
    """The process-wide :class:`JobManager`."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = JobManager()
        return _MANAGER
