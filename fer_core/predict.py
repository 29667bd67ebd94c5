"""Predictor: a :class:`fer_core.model.FerModel` + a face detector -> per-face emotions.

    p = Predictor("models/my-run")               # a run dir or a .keras file; None = default model
    faces = p.predict_image("photo.jpg")         # [FacePrediction(box, emotion, scores, top_k)]
    faces = p.predict_image("photo.jpg", tta=True)  # each face averaged with its mirror image
    annotated = fer_core.drawing.annotate(image, faces, mode="emoji")

Probabilities, flip TTA, calibration and ``describe`` all come from the FerModel; this module
adds detection (:class:`fer_core.vision.FaceDetector`, any registered detector), alignment (eyes
level, when the detector gives eye landmarks and ``align`` is on) and cropping. All faces of a
frame go through the model in one call. Drawing lives in :mod:`fer_core.drawing`.
Thread-safe: one ``Predictor`` can be shared by every session and thread.
"""

from __future__ import annotations

import threading

import numpy as np

from fer_core import vision
from fer_core.detectors import Detections
from fer_core.model import BUCKETS, FacePrediction, FerModel, default_labels

__all__ = ["Predictor", "FacePrediction", "Detections", "default_labels", "BUCKETS",
           "ALIGN_DEFAULT"]

# Eye alignment is on by default: see README "Alignment" for the PublicTest measurement
# (python -m fer_core bench align).
ALIGN_DEFAULT = True


class Predictor:
    """A model + detector, loaded once; safe to share between threads.

    ``model``: None (``FER_MODEL``, else the shipped model), a run id, a run dir, a ``.keras``
    file, a :class:`FerModel`, or a ``keras.Model`` (then ``labels`` may be given). ``backend``: "auto"
    (TFLite, else Keras), "tflite" or "keras". ``detector_config``: default the ``photo``
    preset of the default detector. ``tta``: the default of the predict methods'
    ``tta`` (flip averaging); None takes the model's default (its calibration.json decides).
    """

    def __init__(self, model=None, detector_config: vision.DetectorConfig | None = None, *,
                 backend: str = "auto", labels=None, margin: float = vision.DEFAULT_MARGIN,
                 tta: bool | None = None, align: bool = ALIGN_DEFAULT):
        self.margin = float(margin)
        self.align = bool(align)
        self.detector_config = (detector_config or vision.DetectorConfig.preset("photo")).validate()
        self._detector: vision.FaceDetector | None = None
        self._det_lock = threading.Lock()
        if isinstance(model, FerModel):
            self.fer_model = model
        elif hasattr(model, "inputs") and hasattr(model, "outputs"):
            self.fer_model = FerModel.wrap(model, labels, backend=backend)
        else:  # a path or run id; None: FER_MODEL or the shipped model (fer_core.resolve)
            self.fer_model = FerModel.load(model, backend=backend)
        self.tta = self.fer_model.default_tta if tta is None else bool(tta)

    # ---- the model's face: model, labels, label_set, model_id, n_classes, backend, ... ------
    _FROM_MODEL = frozenset({"model", "labels", "label_set", "model_id", "n_classes", "backend",
                             "backend_name", "backend_error", "calls", "faces_seen"})

    def __getattr__(self, name):
        if name in Predictor._FROM_MODEL and "fer_model" in self.__dict__:
            return getattr(self.__dict__["fer_model"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def model_path(self):
        return self.fer_model.path

    @property
    def detector(self) -> vision.FaceDetector:
        with self._det_lock:
            if self._detector is None:
                self._detector = vision.FaceDetector(self.detector_config)
            return self._detector

    # ---- faces -> probabilities -----------------------------------------------------------
    def predict_faces(self, faces, tta: bool | None = None) -> np.ndarray:
        """Calibrated probabilities float32 (N, n_classes) for uint8 faces (N, 48, 48) or
        (N, 48, 48, 1). ``tta`` (default: the predictor's): average each face with its mirror."""
        return self.fer_model.predict_proba(faces, tta=self.tta if tta is None else tta)

    # ---- images -> face predictions ------------------------------------------------------
    def detect(self, image, near=None) -> Detections:
        """Faces in a decoded image (see :meth:`vision.FaceDetector.detect`)."""
        return self.detector.detect(image, near=near)

    def crops(self, image: np.ndarray, faces) -> np.ndarray:
        """uint8 (N, 48, 48) model inputs of ``faces`` (:class:`Detections`, or boxes (N, 4)),
        aligned on the eyes when ``align`` is on and the detections carry landmarks."""
        if isinstance(faces, Detections):
            eyes = faces.eyes if self.align else None
            return vision.crop_faces(image, faces.boxes, self.margin, eyes)
        return vision.crop_faces(image, np.asarray(faces, dtype=np.float64).reshape(-1, 4),
                                 self.margin)

    def predict_boxes(self, image: np.ndarray, faces, top_k: int = 3,
                      tta: bool | None = None) -> list[FacePrediction]:
        """Classify the given faces (:class:`Detections` or boxes (N, 4)) of a decoded image,
        all in one model call."""
        boxes = faces.int_boxes if isinstance(faces, Detections) else (
            np.asarray(faces, dtype=np.int64).reshape(-1, 4))
        if not len(boxes):
            return []
        probs = self.predict_faces(self.crops(image, faces), tta=tta)
        return self.describe(probs, boxes, top_k)

    def predict_image(self, image, detect: bool = True, top_k: int = 3, *,
                      color: str = "bgr", name: str | None = None,
                      tta: bool | None = None) -> list[FacePrediction]:
        """Faces in ``image`` (path, bytes, file object, or BGR/grey/BGRA array; RGB with
        ``color="rgb"``), largest first. ``detect=False``: the whole image is one face crop.
        ``tta``: see :meth:`predict_faces`."""
        img = vision.decode_image(image, color=color, name=name)
        if not detect:
            h, w = img.shape[:2]
            probs = self.predict_faces(vision.whole_image_face(img), tta=tta)
            return self.describe(probs, [[0, 0, w, h]], top_k)
        return self.predict_boxes(img, self.detect(img), top_k, tta=tta)

    def describe(self, probs: np.ndarray, boxes=None, top_k: int = 3) -> list[FacePrediction]:
        """:meth:`FerModel.describe` (the one argument order: probabilities, boxes, top_k)."""
        return self.fer_model.describe(probs, boxes, top_k)

    def info(self) -> dict:
        return {**self.fer_model.info(), "tta": self.tta, "align": self.align,
                "detector": self.detector_config.to_dict()}


