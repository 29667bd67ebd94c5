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

from fer_core import runs
from fer_core.errors import FerError


def _load(path, field: str):
    if not runs.has_model(path):
        raise FerError("no model here (expected a run directory with model.keras or a .keras "
                       "file)", where=f"{field}: {path}")
    return runs.load_model(path)  # a damaged or unsafe file: FerError naming the file


def init_weights(model, source) -> None:
    """Copy the weights of the model at ``source`` into ``model`` (same architecture).

    Raises :class:`FerError` naming the first layer whose weights do not fit."""
    src = _load(source, "init_from")
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
    """(N, C) float32: the flip-averaged probabilities of each teacher on ``images``,
    averaged over the teachers. Raises :class:`FerError` naming a teacher whose labels differ
    from ``label_names``."""
    from fer_core import evaluation

    total = None
    for source in sources:
        names, _ = runs.read_labels(source)
        model = _load(source, "teachers")
        n_out = evaluation.n_outputs(model)
        if n_out != len(label_names) or (names is not None and tuple(names) !=
                                         tuple(label_names)):
            raise FerError(f"the teacher predicts {list(names) if names else f'{n_out} classes'}"
                           f", the student {list(label_names)}", where=f"teachers: {source}")
        probs = evaluation.predict_proba(model, images, batch_size=256, tta=True)
        total = probs if total is None else total + probs
    return (total / len(sources)).astype(np.float32)
