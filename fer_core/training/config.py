"""Training configuration: :class:`TrainConfig` and its validation (no TensorFlow import)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from fer_core import labels as labelsets
from fer_core import runs
from fer_core.errors import FerError

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
        from fer_core import architectures

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

        if self.arch not in architectures.ARCHITECTURES:
            bad("arch", f"unknown architecture {self.arch!r}; expected one of "
                        f"{sorted(architectures.ARCHITECTURES)}")
        if not isinstance(self.arch_params, dict):
            bad("arch_params", f"expected a dict, got {type(self.arch_params).__name__}")
        allowed = architectures.arch_params(self.arch)
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
