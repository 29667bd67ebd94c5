"""Predictor: a :class:`fer_core.model.FerModel` + a face detector -> per-face emotions.

    p = Predictor("models/my-run")               # a run dir or a .keras file; None = default model
    faces = p.predict_image("photo.jpg")         # [FacePrediction(box, emotion, scores, top_k)]
    faces = p.predict_image("photo.jpg", tta=True)  # each face averaged with its mirror image
    annotated = annotate(image, faces, mode="emoji")

Probabilities, flip TTA, calibration and ``describe`` all come from the FerModel; this module
adds detection, cropping and drawing. All faces of a frame go through the model in one call.
Thread-safe: one ``Predictor`` can be shared by every session and thread.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from fer_core import vision
from fer_core.errors import FerError
from fer_core.labels import EMOJI, canonical
from fer_core.model import BUCKETS, FacePrediction, FerModel, default_labels

__all__ = ["Predictor", "FacePrediction", "annotate", "default_labels", "BUCKETS"]


class Predictor:
    """A model + detector, loaded once; safe to share between threads.

    ``model``: None (``fer_core.runs.default_model()``), a run dir, a ``.keras`` file, a
    :class:`FerModel`, or a ``keras.Model`` (then ``labels`` may be given). ``backend``: "auto"
    (TFLite, else Keras), "tflite" or "keras". ``tta``: the default of the predict methods'
    ``tta`` (flip averaging); None takes the model's default (its calibration.json decides).
    """

    def __init__(self, model=None, detector_config: vision.DetectorConfig | None = None, *,
                 backend: str = "auto", labels=None, margin: float = vision.DEFAULT_MARGIN,
                 tta: bool | None = None):
        self.margin = float(margin)
        self.detector_config = (detector_config or vision.DetectorConfig()).validate()
        self._detector: vision.FaceDetector | None = None
        self._det_lock = threading.Lock()
        if model is None:
            from fer_core.runs import default_model
            model = default_model()
            if not model.exists():
                raise FerError("no model at this path; train one (python -m fer_core train) or "
                               "pass --model a run directory or .keras file", where=str(model))
        if isinstance(model, FerModel):
            self.fer_model = model
        elif hasattr(model, "inputs") and hasattr(model, "outputs"):
            self.fer_model = FerModel.wrap(model, labels, backend=backend)
        else:
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
    def detect(self, image, near=None) -> np.ndarray:
        """Face boxes int (N, 4) in a decoded image (see :meth:`vision.FaceDetector.detect`)."""
        return self.detector.detect(image, near=near)

    def predict_boxes(self, image: np.ndarray, boxes, top_k: int = 3,
                      tta: bool | None = None) -> list[FacePrediction]:
        """Classify the given boxes of a decoded image, all in one model call."""
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        if not len(boxes):
            return []
        probs = self.predict_faces(vision.crop_faces(image, boxes, self.margin), tta=tta)
        return self.describe(boxes, probs, top_k)

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
            return self.describe([[0, 0, w, h]], probs, top_k)
        return self.predict_boxes(img, self.detect(img), top_k, tta=tta)

    def describe(self, boxes, probs: np.ndarray, top_k: int = 3) -> list[FacePrediction]:
        """See :meth:`FerModel.describe`."""
        return self.fer_model.describe(probs, boxes, top_k)

    def info(self) -> dict:
        return {**self.fer_model.info(), "tta": self.tta,
                "detector": self.detector_config.to_dict()}


# --------------------------------------------------------------------------- drawing

_COLOURS = {  # BGR
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 150),
    "happy": (0, 200, 255), "sad": (200, 120, 40), "surprise": (0, 160, 255),
    "neutral": (170, 170, 170), "contempt": (120, 80, 160),
}


def emotion_colour(label: str) -> tuple[int, int, int]:
    try:
        return _COLOURS[canonical(label)]
    except FerError:
        return (0, 255, 0)


def annotate(image, faces, mode: str = "box", *, ids=None, stale: bool = False) -> np.ndarray:
    """An annotated BGR copy of ``image``: per face a box + "label 87%" (``mode="box"``) or
    the emotion's emoji drawn over the face, sized to its box (``mode="emoji"``).

    ``faces``: FacePrediction objects or dicts with box/emotion/scores. ``ids`` optionally
    names each face ("#1"). ``stale`` draws thinner boxes (annotations from an older frame).
    """
    if mode not in ("box", "emoji"):
        raise FerError(f"unknown overlay mode {mode!r}; expected 'box' or 'emoji'", where="mode")
    img = vision.decode_image(image) if not isinstance(image, np.ndarray) else image
    out = vision.to_bgr(img).copy()
    h, w = out.shape[:2]
    base = max(0.4, min(1.2, max(h, w) / 1000))
    for i, f in enumerate(faces):
        box = f.box if hasattr(f, "box") else f["box"]
        emotion = f.emotion if hasattr(f, "emotion") else f["emotion"]
        scores = f.scores if hasattr(f, "scores") else f["scores"]
        conf = float(scores.get(emotion, 0.0))
        x, y, bw, bh = (int(v) for v in box)
        colour = emotion_colour(emotion)
        text = f"{emotion} {conf:.0%}"
        if ids is not None:
            text = f"#{ids[i]} {text}"
        if mode == "emoji":
            _draw_emoji(out, (x + bw // 2, y + bh // 2), max(bw, bh) // 2 + 2, emotion)
        else:
            cv2.rectangle(out, (x, y), (x + bw, y + bh), colour,
                          1 if stale else max(2, int(round(2 * base))), cv2.LINE_AA)
        _label(out, text, x, y, y + bh, colour, base)
    return out


def _label(img, text, x, y_top, y_bottom, colour, base):
    scale = 0.5 * base + 0.15
    th = max(1, int(round(base * 1.5)))
    (tw, tht), bl = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, th)
    ty = y_top - 6 if y_top - tht - bl - 6 >= 0 else min(img.shape[0] - bl - 2,
                                                          y_bottom + tht + 6)
    x = max(0, min(x, img.shape[1] - tw - 4))
    cv2.rectangle(img, (x, ty - tht - 4), (x + tw + 4, ty + bl), colour, -1)
    lum = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    cv2.putText(img, text, (x + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if lum > 128 else (255, 255, 255), th, cv2.LINE_AA)


def _draw_emoji(img, centre, r, emotion):
    """A flat emoji face drawn with OpenCV primitives (no font needed)."""
    try:
        e = canonical(emotion)
    except FerError:
        e = "neutral"
    cx, cy = int(centre[0]), int(centre[1])
    r = max(int(r), 6)
    face = {"angry": (40, 90, 235), "disgust": (90, 200, 150)}.get(e, (40, 205, 255))
    dark = (30, 40, 60)
    t = max(1, r // 12)
    cv2.circle(img, (cx, cy), r, face, -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, (20, 120, 200), max(1, r // 25), cv2.LINE_AA)
    if e == "fear":  # pale blue forehead
        overlay = img.copy()
        cv2.ellipse(overlay, (cx, cy), (r, r), 0, 200, 340, (235, 200, 150), -1, cv2.LINE_AA)
        cv2.addWeighted(overlay, 0.6, img, 0.4, 0, dst=img)
    ex, ey = int(r * 0.36), int(r * 0.22)
    eyes = [(cx - ex, cy - ey), (cx + ex, cy - ey)]
    for k, (px, py) in enumerate(eyes):
        side = 1 if k == 0 else -1  # +1: the inner (nose) side is to the right
        if e in ("surprise", "fear"):
            cv2.circle(img, (px, py), int(r * 0.17), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(img, (px, py), int(r * 0.08), dark, -1, cv2.LINE_AA)
        elif e == "happy":
            cv2.ellipse(img, (px, py + int(r * .05)), (int(r * .14), int(r * .12)), 0, 180, 360,
                        dark, t + 1, cv2.LINE_AA)
        elif e == "disgust":
            cv2.line(img, (px - int(r * .14), py), (px + int(r * .14), py), dark, t + 1,
                     cv2.LINE_AA)
        else:
            cv2.ellipse(img, (px, py), (int(r * .08), int(r * .12)), 0, 0, 360, dark, -1,
                        cv2.LINE_AA)
        brow_y = py - int(r * 0.22)
        if e == "angry":  # inner ends down
            cv2.line(img, (px - side * int(r * .18), brow_y - int(r * .06)),
                     (px + side * int(r * .12), brow_y + int(r * .08)), dark, t + 1, cv2.LINE_AA)
        elif e in ("sad", "fear"):  # inner ends up
            cv2.line(img, (px - side * int(r * .18), brow_y + int(r * .06)),
                     (px + side * int(r * .12), brow_y - int(r * .06)), dark, t, cv2.LINE_AA)
        elif e == "surprise":
            cv2.ellipse(img, (px, brow_y - int(r * .04)), (int(r * .16), int(r * .08)), 0, 200,
                        340, dark, t, cv2.LINE_AA)
    my = cy + int(r * 0.42)
    mw = int(r * 0.42)
    if e == "happy":
        cv2.ellipse(img, (cx, cy + int(r * .2)), (mw, int(r * .36)), 0, 10, 170, dark, -1,
                    cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy + int(r * .45)), (int(mw * .6), int(r * .1)), 0, 0, 180,
                    (80, 80, 230), -1, cv2.LINE_AA)
    elif e in ("sad", "angry"):
        cv2.ellipse(img, (cx, my + int(r * .12)), (int(mw * .8), int(r * .18)), 0, 200, 340,
                    dark, t + 1, cv2.LINE_AA)
        if e == "sad":  # a tear
            tx, ty = eyes[1][0] + int(r * .05), eyes[1][1] + int(r * .22)
            cv2.circle(img, (tx, ty), max(2, int(r * .08)), (240, 170, 60), -1, cv2.LINE_AA)
    elif e == "surprise":
        cv2.ellipse(img, (cx, my), (int(r * .15), int(r * .2)), 0, 0, 360, dark, -1, cv2.LINE_AA)
    elif e == "fear":
        cv2.ellipse(img, (cx, my), (int(mw * .75), int(r * .14)), 0, 0, 360, dark, -1,
                    cv2.LINE_AA)
        cv2.line(img, (cx - int(mw * .6), my), (cx + int(mw * .6), my), (255, 255, 255), t,
                 cv2.LINE_AA)
    elif e == "disgust":
        xs = np.linspace(cx - mw, cx + mw, 7)
        ys = [my + (int(r * .06) if i % 2 else -int(r * .06)) for i in range(7)]
        cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, dark, t + 1,
                      cv2.LINE_AA)
    elif e == "contempt":
        cv2.line(img, (cx - mw // 2, my + int(r * .04)), (cx + mw, my - int(r * .1)), dark,
                 t + 1, cv2.LINE_AA)
    else:  # neutral
        cv2.line(img, (cx - mw // 1, my), (cx + mw, my), dark, t + 1, cv2.LINE_AA)


def emoji_char(label: str) -> str:
    """The Unicode emoji of an emotion (for UI text)."""
    try:
        return EMOJI[canonical(label)]
    except (FerError, KeyError):
        return ""
