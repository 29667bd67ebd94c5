"""Face detectors behind one interface: ``detect(image) -> Detections``.

    from fer_core.detectors import create
    det = create("blazeface")            # or "haar", "blazeface-short"
    d = det.detect(bgr)                  # Detections: boxes (N, 4) x,y,w,h; scores; landmarks
    d.boxes, d.scores, d.landmarks       # landmarks (N, 5, 2): eye, eye, nose, mouth, ear

Registered detectors (``DETECTORS``; ``python -m fer_core bench detect`` measures them):

* ``haar``: OpenCV's frontal-face Haar cascade (2001), shipped inside opencv-python; no
  landmarks; its score is ``n / (n + 5)`` of the ``n`` neighbouring windows that agreed.
* ``blazeface``: MediaPipe's BlazeFace *full range* (192x192 input, faces up to ~5 m), with
  6 key points, of which we keep 5 (eyes, nose, mouth, one ear... see ``_BLAZE_POINTS``).
* ``blazeface-short``: BlazeFace *short range* (128x128, faces within ~2 m: the webcam).

The BlazeFace weights are MediaPipe's ``.tflite`` files (Apache-2.0), shipped in this package
(``fer_core/weights/``, see its README for their origin and checksums). They run on LiteRT
(``ai-edge-litert``), so detection never imports TensorFlow, on every install, the runtime
included. Nothing is downloaded at run time.

A detector sees the whole image it is given (callers downscale: see
:class:`fer_core.vision.FaceDetector`, which adds presets, minimum size, score threshold,
non-maximum suppression and the guard against degenerate images). Detectors are not
thread-safe; ``FaceDetector`` lends them from a pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_core.errors import FerError

__all__ = ["Detections", "DETECTORS", "DetectorSpec", "create", "nms", "available",
           "detector_names"]


# --------------------------------------------------------------------------- the value type

@dataclass(frozen=True)
class Detections:
    """Faces found in one image: ``boxes`` float32 (N, 4) ``[x, y, w, h]`` in image pixels,
    ``scores`` float32 (N,) in [0, 1], ``landmarks`` float32 (N, 5, 2) ``(x, y)`` or None when
    the detector gives none. Point order: the eye on the image's left, the eye on the image's
    right, nose tip, mouth centre, and a fifth point (an ear tragion for BlazeFace)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    @classmethod
    def empty(cls, with_landmarks: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 5, 2), np.float32) if with_landmarks else None)

    @classmethod
    def from_boxes(cls, boxes, scores=None, landmarks=None) -> "Detections":
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        s = (np.ones(len(b), np.float32) if scores is None
             else np.asarray(scores, dtype=np.float32).reshape(-1))
        lm = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        return cls(b, s, lm)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def int_boxes(self) -> np.ndarray:
        """Boxes rounded to int32 pixels."""
        return np.round(self.boxes).astype(np.int32).reshape(-1, 4)

    @property
    def eyes(self) -> np.ndarray | None:
        """(N, 2, 2) eye centres (image-left eye first), or None without landmarks."""
        return None if self.landmarks is None else self.landmarks[:, :2]

    def select(self, index) -> "Detections":
        """The detections at ``index`` (a boolean mask or integer indices), in that order."""
        return Detections(self.boxes[index], self.scores[index],
                          None if self.landmarks is None else self.landmarks[index])

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> "Detections":
        """Coordinates multiplied by ``factor`` then shifted by (dx, dy)."""
        b = self.boxes * np.float32(factor)
        b[:, 0] += dx
        b[:, 1] += dy
        lm = None
        if self.landmarks is not None:
            lm = self.landmarks * np.float32(factor) + np.array([dx, dy], np.float32)
        return Detections(b, self.scores.copy(), lm)

    def largest_first(self) -> "Detections":
        area = self.boxes[:, 2] * self.boxes[:, 3]
        return self.select(np.argsort(-area, kind="stable"))

    @staticmethod
    def concat(parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        lms = [p.landmarks for p in parts]
        lm = None if any(x is None for x in lms) else np.concatenate(lms)
        return Detections(np.concatenate([p.boxes for p in parts]),
                          np.concatenate([p.scores for p in parts]), lm)


def nms(d: Detections, iou_threshold: float = 0.3, contain: float = 0.7) -> Detections:
    """Greedy non-maximum suppression, best score first: a box is dropped when it overlaps a
    kept one by IoU > ``iou_threshold`` or lies mostly (> ``contain`` of its area) inside it,
    so neither a shifted second box nor a box inside a face (an eye, a mouth) counts a face
    twice. Used across scales, across the tracker's local searches and per detector."""
    if len(d) <= 1:
        return d
    b = d.boxes.astype(np.float64)
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
    area = np.maximum(b[:, 2], 0) * np.maximum(b[:, 3], 0)
    order = np.argsort(-d.scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0)
        inside = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
        order = rest[(iou <= iou_threshold) & (inside <= contain)]
    return d.select(np.asarray(keep, dtype=np.int64))


# --------------------------------------------------------------------------- detectors

HAAR_FILE = "haarcascade_frontalface_default.xml"


class HaarDetector:
    """OpenCV's Haar cascade. ``min_size``/``max_size`` in pixels of the image given."""

    name = "haar"
    landmarks = False
    input_side = None   # runs at any size

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5):
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self._cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, HAAR_FILE))
        if self._cascade.empty():
            raise FerError("OpenCV's Haar face cascade could not be loaded", where=HAAR_FILE)

    def detect(self, image: np.ndarray, min_size: float = 20, max_size: float | None = None
               ) -> Detections:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        m = max(int(round(min_size)), 20)
        if min(grey.shape[:2]) < m:
            return Detections.empty()
        kwargs = {"minSize": (m, m)}
        if max_size:
            kwargs["maxSize"] = (int(max_size), int(max_size))
        boxes, counts = self._cascade.detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, **kwargs)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        n = np.asarray(counts, dtype=np.float32).reshape(-1)
        return Detections(boxes, n / (n + 5.0), None)


# Key points of BlazeFace: right eye, left eye (the subject's; image-left first for a frontal
# face), nose tip, mouth centre, right ear tragion, left ear tragion. We keep the first five.
_BLAZE_POINTS = 5
_BLAZE = {  # name -> (weights file in WEIGHTS_DIR, input side, SSD strides, anchors per cell)
    "blazeface": ("face_detection_full_range.tflite", 192, [4], 1),
    "blazeface-short": ("face_detection_short_range.tflite", 128, [8, 16, 16, 16], 2),
}


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # package data (weights/README.md)


def _litert_interpreter(path: Path, detector: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise FerError(f"the {detector!r} detector needs the 'ai-edge-litert' package (LiteRT): "
                       "pip install ai-edge-litert", where="detector") from None
    from fer_core.native_logs import startup_lines_dropped
    with startup_lines_dropped():  # LiteRT's "Created ... XNNPACK delegate" line on fd 2
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        interp.invoke()  # the delegate is made on the first run
    return interp


def _ssd_anchors(side: int, strides: list[int], per_cell: int) -> np.ndarray:
    """Anchor centres (normalised) of MediaPipe's SSD anchor calculator for BlazeFace."""
    out = []
    i = 0
    while i < len(strides):
        j, repeats = i, 0
        while j < len(strides) and strides[j] == strides[i]:
            repeats += per_cell
            j += 1
        n = side // strides[i]
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], 1)
        out.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(out)


class BlazeFaceDetector:
    """MediaPipe BlazeFace on LiteRT: the image is letterboxed into the model's square input."""

    landmarks = True

    def __init__(self, name: str = "blazeface"):
        file, side, strides, per_cell = _BLAZE[name]
        self.name = name
        self.input_side = side
        path = WEIGHTS_DIR / file
        if not path.is_file():
            raise FerError(f"the {name!r} detector's weights are missing from this install "
                           "(reinstall fer-studio)", where=str(path))
        self._interp = _litert_interpreter(path, name)
        inp = self._interp.get_input_details()[0]
        self._in = inp["index"]
        outs = sorted(self._interp.get_output_details(), key=lambda o: -o["shape"][-1])
        self._box_out, self._score_out = outs[0]["index"], outs[1]["index"]
        self._anchors = _ssd_anchors(side, strides, per_cell)
        self._buf = np.zeros((1, side, side, 3), np.float32)

    def detect(self, image: np.ndarray, min_size: float = 0, max_size: float | None = None,
               threshold: float = 0.5) -> Detections:
        h, w = image.shape[:2]
        side = self.input_side
        s = side / max(h, w)
        nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                           else cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        else:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        px, py = (side - nw) // 2, (side - nh) // 2
        buf = self._buf
        buf.fill(0.0)  # letterbox padding: grey 0 in [-1, 1]
        buf[0, py:py + nh, px:px + nw] = small.astype(np.float32) * (2 / 255.0) - 1.0
        self._interp.set_tensor(self._in, buf)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._box_out)[0]
        logits = self._interp.get_tensor(self._score_out)[0, :, 0]
        keep = np.nonzero(logits > np.log(threshold / (1 - threshold)))[0]
        if not len(keep):
            return Detections.empty(True)
        raw = raw[keep].reshape(len(keep), -1, 2) / side
        anc = self._anchors[keep][:, None, :]
        centre = raw[:, 0:1] + anc
        size = raw[:, 1]
        pts = raw[:, 2:2 + _BLAZE_POINTS] + anc
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -80, 80)))
        # model pixels (letterboxed) -> image pixels
        to_img = side / s
        off = np.array([px, py], np.float32) / side
        c = (centre[:, 0] - off) * to_img
        wh = size * to_img
        boxes = np.stack([c[:, 0] - wh[:, 0] / 2, c[:, 1] - wh[:, 1] / 2, wh[:, 0], wh[:, 1]], 1)
        lm = (pts - off) * to_img
        # image-left eye first
        swap = lm[:, 0, 0] > lm[:, 1, 0]
        lm[swap, :2] = lm[swap, 1::-1]
        d = Detections(boxes.astype(np.float32), scores.astype(np.float32),
                       lm.astype(np.float32))
        side_px = np.minimum(d.boxes[:, 2], d.boxes[:, 3])
        ok = (side_px >= min_size) & (side_px > 0)
        if max_size:
            ok &= side_px <= max_size
        return nms(d.select(ok), 0.3)


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    summary: str
    packages: tuple[str, ...]   # pip names it needs beyond the base install
    factory: object

    def available(self) -> bool:
        try:
            self.factory()
        except FerError:
            return False
        return True


DETECTORS: dict[str, DetectorSpec] = {
    "haar": DetectorSpec("haar", "OpenCV Haar cascade (2001): no landmarks", (),
                         HaarDetector),
    "blazeface": DetectorSpec("blazeface", "MediaPipe BlazeFace full range (CNN, 5 landmarks, "
                              "LiteRT)", ("ai-edge-litert",),
                              lambda: BlazeFaceDetector("blazeface")),
    "blazeface-short": DetectorSpec("blazeface-short", "MediaPipe BlazeFace short range (CNN, "
                                    "faces within ~2 m, LiteRT)",
                                    ("ai-edge-litert",),
                                    lambda: BlazeFaceDetector("blazeface-short")),
}


def detector_names() -> list[str]:
    return list(DETECTORS)


def check_name(name: str, where: str = "detector") -> str:
    """``name`` lower-cased if registered, else a FerError listing the registered ones."""
    key = str(name).strip().lower()
    if key not in DETECTORS:
        raise FerError(f"unknown face detector {name!r}; expected one of {detector_names()}",
                       where=where)
    return key


def create(name: str, **params):
    """A new detector object (not thread-safe) of the registered ``name``; FerError for an
    unknown name or a missing package (the message names what to pip install)."""
    spec = DETECTORS[check_name(name)]
    return spec.factory(**params) if params else spec.factory()


def available() -> dict[str, bool]:
    """name -> whether its packages are installed here."""
    return {n: s.available() for n, s in DETECTORS.items()}


def add_argument(parser) -> None:
    """``--detector NAME`` on a CLI command (predict, video, bench); checked when used."""
    parser.add_argument("--detector", default=None, metavar="NAME",
                        help=f"face detector: one of {', '.join(DETECTORS)} (default "
                             "blazeface)")
