"""Predictor: a saved model + a face detector -> per-face emotions. Thread-safe and batched.

    p = Predictor("models/my-run")               # a run dir or a .keras file; None = default model
    faces = p.predict_image("photo.jpg")         # [FacePrediction(box, emotion, scores, top_k)]
    faces = p.predict_image("photo.jpg", tta=True)  # each face averaged with its mirror image
    annotated = annotate(image, faces, mode="emoji")

Speed: the Keras model is converted once to a TensorFlow Lite flatbuffer (XNNPACK kernels; cached
on disk per model id) which classifies one face in about a millisecond without Keras' per-call
overhead; if conversion fails or its outputs differ from Keras', a ``tf.function`` with a fixed
input signature is used instead (``backend`` tells which). All faces of a frame go through the
model in one call; batches are padded to power-of-two buckets so interpreters are reused.

Flip test-time augmentation (``tta=True``, per predictor or per call): each face is classified
together with its mirror image, in the same model call, and the two are averaged. It changes the
PublicTest accuracy of the committed models by -0.2 to +1.4 points (-0.2 for the shipped model,
which learned from flip-averaged teachers) and doubles the classification time
(1.5 -> 2.9 ms a face), so it is off by default and the live webcam never uses it.

Thread safety: one ``Predictor`` can be shared by every session and thread. TFLite interpreters
are not thread-safe, so each call borrows one from a pool (created on demand, returned after).
"""

from __future__ import annotations

import hashlib
import os
import queue
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fer_core import atomic, native_logs, vision
from fer_core.errors import FerError
from fer_core.labels import EMOJI, FER7, FERPLUS8, MERGED6, canonical, detect_label_set

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated",
                        category=UserWarning)

__all__ = ["Predictor", "FacePrediction", "annotate", "load_model_and_labels",
           "default_labels", "BUCKETS"]

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
TFLITE_FORMAT = 1  # bump to invalidate cached conversions
# Threads per TFLite interpreter: 2 halves single-face latency on a 2-core CPU.
TFLITE_THREADS = int(os.environ.get("FER_TFLITE_THREADS", "2"))


@dataclass
class FacePrediction:
    """One face: ``box`` [x, y, w, h] in image pixels, the top ``emotion``, ``scores`` (label ->
    probability, summing to 1, in the model's label order) and ``top_k`` [(label, p), ...]."""

    box: list[int]
    emotion: str
    scores: dict[str, float]
    top_k: list[tuple[str, float]] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return self.scores[self.emotion]

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "emotion": self.emotion,
                "confidence": round(float(self.confidence), 6),
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "top_k": [[k, round(float(v), 6)] for k, v in self.top_k]}


# --------------------------------------------------------------------------- loading

def default_labels(n_outputs: int) -> tuple[str, ...]:
    """Label names for a model without labels.json, from its number of outputs."""
    by_n = {7: FER7, 6: MERGED6, 8: FERPLUS8}
    if n_outputs not in by_n:
        raise FerError(f"model has {n_outputs} outputs and no labels.json; expected 7 (fer7), "
                       "6 (merged6) or 8 (ferplus8) outputs", where="labels")
    return by_n[n_outputs]


def load_model_and_labels(path):
    """(keras.Model, labels, label_set, model_file) for a run dir or .keras file.

    Loads with ``fer_core.runs.load_model`` (safe_mode=True); labels come from the run's
    labels.json, else from the number of outputs. Any wrong, corrupt or incompatible file
    raises :class:`FerError` naming it.
    """
    from fer_core import runs

    p = Path(os.path.expanduser(str(path)))
    if p.is_dir() and not runs.has_model(p):
        raise FerError("run directory has no model.keras (not a run, or still training); "
                       "train one (python -m fer_core train) or pass --model another run "
                       "directory or .keras file", where=str(p))
    model = runs.load_model(p)
    model_file = p / runs.MODEL_FILE if p.is_dir() else p
    _check_shapes(model, model_file)
    n_out = int(model.outputs[0].shape[-1])
    names, lset = runs.read_labels(p)
    if names is None:
        names = default_labels(n_out)
        lset = detect_label_set(names)
    elif len(names) != n_out:
        raise FerError(f"lists {len(names)} labels but the model has {n_out} outputs",
                       where=str(p))
    return model, names, lset or "custom", model_file


def _check_shapes(model, where) -> None:
    try:
        ishape = tuple(model.inputs[0].shape)[1:]
        oshape = tuple(model.outputs[0].shape)[1:]
    except (AttributeError, IndexError, TypeError):
        raise FerError("model has no single input/output", where=str(where)) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise FerError("expected a model with one input and one output", where=str(where))
    if ishape not in ((48, 48, 1), (48, 48)):
        raise FerError(f"model expects input {ishape}; expected 48x48x1 grey faces",
                       where=str(where))
    if len(oshape) != 1 or not oshape[0] or oshape[0] < 2:
        raise FerError(f"model output shape {oshape}; expected one score per class",
                       where=str(where))


def _model_id(model_file: Path) -> str:
    st = model_file.stat()
    key = f"{model_file.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    name = model_file.parent.name if model_file.name == "model.keras" else model_file.stem
    return f"{name}-{hashlib.sha1(key).hexdigest()[:8]}"


# --------------------------------------------------------------------------- backends

def _bucket(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return BUCKETS[-1]


class _KerasBackend:
    name = "keras"

    def __init__(self, model):
        import tensorflow as tf
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                               input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.float32)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._fn(x).numpy()


class _TFLiteBackend:
    name = "tflite"

    def __init__(self, blob: bytes):
        self._blob = blob
        self._pools: dict[int, queue.SimpleQueue] = {b: queue.SimpleQueue() for b in BUCKETS}
        self._release(self._new(1))  # fails now if the flatbuffer is bad

    def _new(self, batch: int):
        import tensorflow as tf
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" (still in TF 2.21)
            warnings.simplefilter("ignore", UserWarning)
            it = tf.lite.Interpreter(model_content=self._blob, num_threads=TFLITE_THREADS)
        inp = it.get_input_details()[0]
        if tuple(inp["shape"])[0] != batch:
            it.resize_tensor_input(inp["index"], [batch, 48, 48, 1], strict=False)
        with native_logs.first_time("tflite-allocate"):  # the XNNPACK start-up line
            it.allocate_tensors()
        return batch, it, inp["index"], it.get_output_details()[0]["index"]

    def _release(self, item):
        self._pools[item[0]].put(item)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        try:
            item = self._pools[b].get_nowait()
        except queue.Empty:
            item = self._new(b)
        try:
            _, it, i_in, i_out = item
            it.set_tensor(i_in, x)
            it.invoke()
            return it.get_tensor(i_out).copy()
        finally:
            self._release(item)


def _tflite_blob(model, cache_file: Path | None) -> bytes:
    if cache_file is not None and cache_file.is_file():
        return cache_file.read_bytes()
    import tensorflow as tf
    with tempfile.TemporaryDirectory(prefix="fer-export-") as d:
        model.export(d, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        blob = conv.convert()
    if cache_file is not None:
        try:
            atomic.write_bytes(cache_file, blob)
        except OSError:
            pass  # cache is an optimisation only
    return blob


def _cache_dir() -> Path:
    return Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer-studio"))


# --------------------------------------------------------------------------- predictor

class Predictor:
    """A model + detector, loaded once; safe to share between threads.

    ``model``: None (``fer_core.DEFAULT_MODEL``), a run dir, a ``.keras`` file, or a
    ``keras.Model`` (then ``labels`` may be given). ``backend``: "auto" (TFLite, else Keras),
    "tflite" or "keras". ``tta``: the default of the predict methods' ``tta`` (flip averaging).
    """

    def __init__(self, model=None, detector_config: vision.DetectorConfig | None = None, *,
                 backend: str = "auto", labels=None, margin: float = vision.DEFAULT_MARGIN,
                 tta: bool = False):
        if backend not in ("auto", "tflite", "keras"):
            raise FerError(f"unknown backend {backend!r}; expected auto, tflite or keras",
                           where="backend")
        self.margin = float(margin)
        self.tta = bool(tta)
        self.detector_config = (detector_config or vision.DetectorConfig()).validate()
        self._detector: vision.FaceDetector | None = None
        self._det_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.calls = 0  # model invocations (for tests / stats)
        self.faces_seen = 0

        if model is None:
            from fer_core.runs import default_model
            model = default_model()
            if not model.exists():
                raise FerError("no model at this path; train one (python -m fer_core train) or "
                               "pass --model a run directory or .keras file", where=str(model))
        if hasattr(model, "predict") and hasattr(model, "inputs"):
            _check_shapes(model, getattr(model, "name", "model"))
            n_out = int(model.outputs[0].shape[-1])
            self.labels = tuple(labels) if labels is not None else default_labels(n_out)
            if len(self.labels) != n_out:
                raise FerError(f"{len(self.labels)} labels for a model with {n_out} outputs",
                               where="labels")
            try:
                self.label_set = detect_label_set(self.labels)
            except FerError:
                self.label_set = "custom"
            self.model_path = None
            self.model_id = f"{model.name}-mem{id(model) & 0xffffff:06x}"
            cache_file = None
        else:
            model, self.labels, self.label_set, mfile = load_model_and_labels(model)
            self.model_path = mfile
            self.model_id = _model_id(mfile)
            cache_file = _cache_dir() / "tflite" / f"{self.model_id}-v{TFLITE_FORMAT}.tflite"
        self.model = model
        self.n_classes = len(self.labels)
        self._softmax = False
        self.backend = self._make_backend(model, backend, cache_file)

    # ---- backend selection ----------------------------------------------------------------
    def _make_backend(self, model, backend: str, cache_file):
        rng = np.random.default_rng(0)
        probe = rng.integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
        keras_be = _KerasBackend(model)
        ref = keras_be(probe)
        if not np.all(np.isfinite(ref)):
            raise FerError("model outputs NaN/inf", where=str(self.model_path or "model"))
        if ref.min() < -1e-6 or not np.allclose(ref.sum(1), 1.0, atol=1e-3):
            self._softmax = True  # logits: normalise ourselves
        if backend == "keras":
            return keras_be
        try:
            tfl = _TFLiteBackend(_tflite_blob(model, cache_file))
            got = np.concatenate([tfl(probe[i:i + 1]) for i in range(4)])
            if np.abs(got - ref).max() > 1e-3:
                raise ValueError(f"TFLite differs from Keras by {np.abs(got - ref).max():.2g}")
            return tfl
        except Exception as e:  # noqa: BLE001 - conversion is an optimisation
            if cache_file is not None:
                try:
                    cache_file.unlink()
                except OSError:
                    pass
            if backend == "tflite":
                raise FerError(f"cannot run the model with TFLite ({e})",
                               where=str(self.model_path or "model")) from None
            self.backend_error = str(e)
            return keras_be

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def detector(self) -> vision.FaceDetector:
        with self._det_lock:
            if self._detector is None:
                self._detector = vision.FaceDetector(self.detector_config)
            return self._detector

    # ---- faces -> probabilities -----------------------------------------------------------
    def predict_faces(self, faces, tta: bool | None = None) -> np.ndarray:
        """Probabilities float32 (N, n_classes) for uint8 faces (N, 48, 48) or (N, 48, 48, 1).
        ``tta`` (default: the predictor's): average each face with its mirror image."""
        x = vision.as_face_batch(faces)
        n_faces = x.shape[0]
        if n_faces == 0:
            return np.empty((0, self.n_classes), dtype=np.float32)
        use_tta = self.tta if tta is None else bool(tta)
        if use_tta:
            x = np.concatenate([x, x[:, :, ::-1]])  # faces then mirrors, batched together
        n = x.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        step = BUCKETS[-1]
        for start in range(0, n, step):
            chunk = x[start:start + step]
            m = chunk.shape[0]
            b = _bucket(m)
            if b != m:
                chunk = np.concatenate([chunk, np.zeros((b - m, 48, 48, 1), np.float32)])
            p = self.backend(np.ascontiguousarray(chunk))[:m]
            with self._count_lock:
                self.calls += 1
                self.faces_seen += m
            out[start:start + m] = p
        if self._softmax:
            out = out - out.max(1, keepdims=True)
            np.exp(out, out=out)
        out /= out.sum(1, keepdims=True)
        if use_tta:
            out = 0.5 * (out[:n_faces] + out[n_faces:])
        return out

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
        k = max(1, min(int(top_k), self.n_classes))
        out = []
        for box, p in zip(boxes, probs):
            order = np.argsort(-p, kind="stable")
            out.append(FacePrediction(
                box=[int(v) for v in box], emotion=self.labels[int(order[0])],
                scores={name: float(v) for name, v in zip(self.labels, p)},
                top_k=[(self.labels[int(i)], float(p[i])) for i in order[:k]]))
        return out

    def info(self) -> dict:
        return {"model_id": self.model_id, "model_path": str(self.model_path or ""),
                "labels": list(self.labels), "label_set": self.label_set,
                "backend": self.backend_name, "tta": self.tta,
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
