"""Starting a run from trained weights, and teacher targets for distillation.

* :func:`init_weights` copies a trained model's weights into a freshly built model of the same
  architecture (``TrainConfig.init_from``): a new run with its own optimizer, schedule and
  augmentation that starts where another run ended.
* :func:`teacher_targets` gives the distillation targets of ``TrainConfig.teachers``: each
  teacher's class probabilities on the training faces, averaged with those of the mirrored
  faces (flip test-time augmentation), then averaged over the teachers. Training mixes them
  with the labels, ``(1 - distill) * label + distill * teacher``, so the student learns the
  teachers' flip-averaged (better) answers, including how much the classes look alike.

Teachers are given as run directories or .keras files, like every other model in the project;
they load with ``safe_mode=True`` and must have the student's label names.
"""

from __future__ import annotations

import numpy as np

from fer_core.errors import FerError
from fer_core.model import FerModel


def _load(path, field: str) -> FerModel:
    try:
        return FerModel.load(path, backend="keras")
    except FerError as e:  # a missing, damaged or unsafe file: name the option too
        msg = str(e)[len(e.where) + 2:] if e.where else str(e)
        raise FerError(f"{msg} ({e.where})" if e.where else msg,
                       where=f"{field}: {path}") from None


def init_weights(model, source) -> None:
    """Copy the weights of the model at ``source`` into ``model`` (same architecture).

    Raises :class:`FerError` naming the first layer whose weights do not fit."""
    src = _load(source, "init_from").model
    theirs, ours = src.weights, model.weights
    if len(theirs) != len(ours):
        raise FerError(f"the model has {len(theirs)} weight tensors, this architecture "
                       f"{len(ours)}: pass the same --arch/--param it was trained with",
                       where=f"init_from: {source}")
    for a, b in zip(theirs, ours):
        if tuple(a.shape) != tuple(b.shape):
            raise FerError(f"weight {b.path} has shape {tuple(b.shape)} here but "
                           f"{tuple(a.shape)} in the model: pass the same --arch/--param it "
                           "was trained with", where=f"init_from: {source}")
    model.set_weights(src.get_weights())


def teacher_targets(sources, images: np.ndarray, label_names) -> np.ndarray:
    """(N, C) float32: the flip-averaged, uncalibrated probabilities of each teacher on
    ``images``, averaged over the teachers. Raises :class:`FerError` naming a teacher whose
    labels differ from ``label_names``."""
    total = None
    for source in sources:
        teacher = _load(source, "teachers")
        if teacher.labels != tuple(label_names):
            raise FerError(f"the teacher predicts {list(teacher.labels)}, the student "
                           f"{list(label_names)}", where=f"teachers: {source}")
        probs = teacher.predict_proba(images, tta=True, calibrated=False, batch_size=256)
        total = probs if total is None else total + probs
    return (total / len(sources)).astype(np.float32)
