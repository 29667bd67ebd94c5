"""The Python API: the names ``fer_core`` exports (``fer_core.__all__``).

    import fer_core
    model = fer_core.load_model()                 # shipped model; or a run dir / .keras file
    faces = model.predict("photo.jpg")            # path, bytes, numpy array (BGR/grey) or PIL
    faces[0].emotion, faces[0].box, faces[0].probabilities, faces[0].to_dict()
    result = model.video("clip.mp4")              # result.rows: one dict per face per
    result.frames, result.summary["faces"]        #   analysed frame (.frames: as a pandas
                                                  #   DataFrame, needs pandas); + summary
    report = model.evaluate("demo")               # metrics dict (needs fer-studio[train])
    model = fer_core.train("demo", "runs/r1", epochs=2)   # a trained Model ([train])

Method names follow the CLI (``predict``, ``video``, ``evaluate``, ``train``). Prediction and
video analysis run on the runtime install (LiteRT, no TensorFlow); ``evaluate`` and ``train``
need ``pip install 'fer-studio[train]'`` and say so. Every user error is a
:class:`fer_core.FerError` whose ``where`` names the image, file, or argument.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_core.errors import FerError
from fer_core.model import FacePrediction

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Model", "Face", "VideoResult", "load_model", "train"]

Face = FacePrediction
"""One face: ``box`` [x, y, w, h] in image pixels, ``emotion`` (the top label),
``probabilities`` (label -> p, summing to 1), ``confidence``, ``top_k`` and ``to_dict()``."""

ImageLike = Any  # str | os.PathLike | bytes | np.ndarray | PIL.Image.Image


@dataclass(frozen=True)
class VideoResult:
    """What :meth:`Model.video` found: ``rows`` (one dict per face per analysed frame, the
    columns of ``frames.csv``: ``frame``, ``face``, ``x``, ``y``, ``w``, ``h`` int, ``time_s``
    and the probabilities float, ``emotion`` str), ``summary`` (the dict of ``summary.json``:
    video, processing, faces, warnings) and ``out_dir`` (where those files are; None when they
    were temporary). ``frames`` is ``rows`` as a pandas DataFrame (pandas is not part of the
    runtime install: ``pip install 'fer-studio[pandas]'``)."""

    rows: list[dict] = field(repr=False)
    summary: dict = field(repr=False)
    out_dir: Path | None = None
    columns: tuple[str, ...] = field(default=(), repr=False)  # of frames.csv, also when empty

    @property
    def frames(self) -> "pd.DataFrame":
        """``rows`` as a pandas DataFrame, one column per ``frames.csv`` column."""
        try:
            import pandas as pd
        except ImportError:
            raise FerError("VideoResult.frames is a pandas DataFrame and pandas is not "
                           "installed: pip install 'fer-studio[pandas]' (or use .rows, a list "
                           "of dicts)", where="frames") from None
        return pd.DataFrame(self.rows, columns=list(self.columns) or None)


_INT_COLUMNS = ("frame", "face", "x", "y", "w", "h")


def _read_rows(path: Path) -> tuple[list[dict], tuple[str, ...]]:
    """The rows of a ``frames.csv`` with their types (ints, strings for the emotions, floats
    for the rest) and its columns."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: (int(v) if k in _INT_COLUMNS else v if k.startswith("emotion")
                     else float(v)) for k, v in row.items()} for row in reader]
        return rows, tuple(reader.fieldnames or ())


def _as_image(image: ImageLike):
    """What :func:`fer_core.vision.decode_image` takes, and the colour order of an array."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) \
            or hasattr(image, "read"):
        return image, "bgr"
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image, without PIL here
        return np.asarray(image.convert("RGB")), "rgb"
    raise FerError(f"expected a path, bytes, a numpy array or a PIL image, got "
                   f"{type(image).__name__}", where="image")


class Model:
    """A loaded model with a face detector: what :func:`load_model` returns.

    ``path``: None (``FER_MODEL`` or the shipped model), a run id, a run directory or a
    ``.keras`` file (:func:`fer_core.resolve.resolve_model`).
    ``tta``: average each face with its mirror image (None: the model's calibration decides).
    Thread-safe; load once and reuse.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, tta: bool | None = None):
        from fer_core import vision
        from fer_core.predict import Predictor

        self._predictor = Predictor(path, detector_config=vision.DetectorConfig.preset("photo"),
                                    tta=tta)

    @property
    def path(self) -> Path | None:
        """The model file."""
        return self._predictor.model_path

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._predictor.labels)

    @property
    def model_id(self) -> str:
        return self._predictor.model_id

    @property
    def backend(self) -> str:
        """"tflite" (LiteRT) or "keras"."""
        return self._predictor.backend_name

    @property
    def detector(self) -> str:
        """The face detector's name ("blazeface" unless ``FER_DETECTOR`` says otherwise)."""
        return self._predictor.detector_config.kind

    def __repr__(self) -> str:
        return (f"Model({self.model_id!r}, backend={self.backend!r}, "
                f"detector={self.detector!r}, labels={list(self.labels)})")

    def predict(self, image: ImageLike, *, detect: bool = True, top_k: int = 3,
                tta: bool | None = None) -> list[Face]:
        """The faces in ``image``, largest first (an empty list when there is none).

        ``image``: a path, encoded bytes, a uint8 array (BGR, BGRA or grey, as OpenCV reads)
        or a PIL image. ``detect=False``: the whole image is one face crop."""
        if int(top_k) < 1:
            raise FerError(f"must be >= 1, got {top_k}", where="top_k")
        data, color = _as_image(image)
        return self._predictor.predict_image(data, detect=detect, top_k=int(top_k),
                                             color=color, tta=tta)

    def video(self, path: str | os.PathLike, out: str | os.PathLike | None = None, *,
              every: int = 5, smoothing: float = 0.0, annotate: bool = False) -> VideoResult:
        """Emotions over time in a video file, as ``python -m fer_core video``: every
        ``every``-th frame is analysed, faces are tracked in between. ``out``: a folder to
        keep ``frames.csv``, ``summary.json`` (and ``annotated.mp4`` with ``annotate``);
        None analyses into a temporary folder."""
        from fer_core import video

        src = Path(os.path.expanduser(str(path)))
        if not src.is_file():
            raise FerError("no such video file" if not src.exists() else "not a file",
                           where=str(src))
        with tempfile.TemporaryDirectory(prefix="fer-video-") as tmp:
            folder = Path(os.path.expanduser(str(out))) if out is not None else Path(tmp)
            summary = video.analyze(src, folder, predictor=self._predictor, every=every,
                                    smoothing=smoothing, annotate=annotate)
            rows, columns = _read_rows(folder / video.FRAMES_CSV)
        return VideoResult(rows=rows, summary=summary, columns=columns,
                           out_dir=folder if out is not None else None)

    def evaluate(self, data, split: str | None = None, *, tta: bool = False) -> dict:
        """Accuracy, macro-F1, per-class metrics, confusion matrix and calibration on one split
        of ``data`` (a path, "demo" or a ``Dataset``), as ``python -m fer_core evaluate``. Needs
        ``fer-studio[train]``."""
        from fer_core.model import has_tensorflow, needs_train
        if not has_tensorflow():
            raise needs_train("evaluate", where="evaluate")
        from fer_core import evaluation

        ds = _dataset(data)
        return evaluation.evaluate(self._predictor.fer_model, ds, split=split, tta=tta)


def _dataset(data):
    """A :class:`fer_core.data.Dataset` as given, else ``fer_core.data.load(data)``."""
    from fer_core import data as fer_data
    from fer_core.data.dataset import Dataset
    return data if isinstance(data, Dataset) else fer_data.load(data)


def load_model(path: str | os.PathLike | None = None, *, tta: bool | None = None) -> Model:
    """The model at ``path`` (run id, run directory or ``.keras`` file; None: ``FER_MODEL`` or
    the shipped model) with the photo face detector. A run with an exported ``model.tflite`` runs
    on LiteRT without TensorFlow."""
    return Model(path, tta=tta)


def train(data, out: str | os.PathLike, *, arch: str = "vgg", epochs: int = 30,
          **config) -> Model:
    """Train a model on ``data`` (a path, "demo" or a ``Dataset``) into the run directory ``out``, as
    ``python -m fer_core train``; ``config``: any :class:`fer_core.training.TrainConfig` field
    (``batch_size``, ``lr``, ``params``, ...). Returns the trained :class:`Model`. Needs
    ``fer-studio[train]``."""
    from fer_core.model import has_tensorflow, needs_train
    if not has_tensorflow():
        raise needs_train("train", where="train")
    from fer_core.training import TrainConfig
    from fer_core.training import train as train_loop

    try:
        cfg = TrainConfig(arch=arch, epochs=int(epochs), **config)
    except TypeError as e:
        raise FerError(f"unknown training option ({e})", where="train") from None
    ds = _dataset(data)
    result = train_loop(ds, cfg, Path(os.path.expanduser(str(out))))
    return Model(result["run_dir"])
