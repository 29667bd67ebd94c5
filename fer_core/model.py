"""FerModel: the one model object every path uses (app, CLI, API, evaluation, teachers, webcam).

    m = FerModel.load("models/my-run")        # a run dir or .keras file; cached per file + mtime
    probs = m.predict_proba(faces)            # uint8 (N, 48, 48) -> calibrated (N, C)
    probs = m.predict_proba(faces, tta=True)  # each face averaged with its mirror image
    faces = m.describe(probs, boxes, top_k=3) # [FacePrediction(box, emotion, scores, top_k)]

A model knows its labels (``labels.json``, else the one table :func:`default_labels` by output
size), its label set, an id, and its calibration (``calibration.json`` beside the model: a
temperature per TTA setting, fitted by :func:`fer_core.evaluation.calibrate`; none means T=1).

Backends. The runtime is LiteRT (``ai-edge-litert``): a TensorFlow Lite flatbuffer run by XNNPACK
kernels, without TensorFlow. A run may carry its flatbuffer, ``model.tflite`` beside
``model.keras`` (``<name>.tflite`` beside another .keras file), made by
``fer-studio export RUN --format tflite`` with its parity against Keras checked and recorded in
``model.tflite.json`` (with the sha256 of the .keras it was made from): :meth:`FerModel.load`
then runs it directly and never imports TensorFlow or Keras (the plain ``pip install`` has
neither). A run without one (or with one made from another .keras) is converted once with
TensorFlow's converter (``fer-studio[train]``) and checked against Keras on a probe batch; a
conversion that passed is cached on disk per model id (path, size and mtime of the .keras), and
later loads run it without importing TensorFlow until the Keras model is asked for. If
conversion fails or the outputs differ, a ``tf.function`` with a free batch dimension is used
(``backend_name`` tells which). Every batch size runs on the one backend: LiteRT has the lower
per-call overhead for the few faces of a frame and, measured on 2,000-3,000 demo faces in
chunks of 64, no more CPU per face than the traced Keras function on large batches either
(vgg 2.1 s against 4.0 s, mini_xception 1.1 against 3.5 s, the shipped ResNet 9.2 against
9.2 s), without importing TensorFlow. Faces go through the model in chunks of ``BUCKETS[-1]``; a partial chunk is padded to a power-of-two bucket so interpreters
are reused. Interpreters are not thread-safe: each call borrows one from a pool per batch
size, so one FerModel can be shared by every thread. The Keras model itself (``model``) is
loaded on first use.

A model built in memory (``FerModel.wrap``) defaults to the Keras backend and reads its weights
live, so a model that is still training can be evaluated between epochs.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_core import atomic, native_logs, vision
from fer_core.errors import FerError
from fer_core.labels import FER7, FERPLUS8, MERGED6, detect_label_set
from fer_core.model_files import (MODEL_FILE, Calibration, file_sha256, load_keras,
                                  model_file, read_calibration, read_labels, stamp)
from fer_core.resolve import resolve_model
from fer_core.settings import get_settings


__all__ = ["FerModel", "FacePrediction", "default_labels", "apply_temperature", "top_k_order",
           "BUCKETS"]

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
TFLITE_FORMAT = 1  # bump to invalidate cached conversions
RUNTIME_SUFFIX = ".tflite"       # the runtime's format, beside the .keras
RECORD_SUFFIX = ".tflite.json"   # how it was made: source sha256, parity, int8
TRAIN_EXTRA = "pip install 'fer-studio[train]'"
_OUTPUTS_TO_LABELS = {7: FER7, 6: MERGED6, 8: FERPLUS8}


# --------------------------------------------------------------------------- results

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

    @property
    def probabilities(self) -> dict[str, float]:
        """Label -> probability (the same dict as ``scores``)."""
        return self.scores

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "emotion": self.emotion,
                "confidence": round(float(self.confidence), 6),
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "top_k": [[k, round(float(v), 6)] for k, v in self.top_k]}


def top_k_order(p: np.ndarray, k: int | None = None) -> np.ndarray:
    """Class indices by falling probability; ties keep the label order (stable sort)."""
    order = np.argsort(-np.asarray(p), kind="stable")
    return order if k is None else order[:k]


# --------------------------------------------------------------------------- labels

def default_labels(n_outputs: int) -> tuple[str, ...]:
    """Label names for a model without labels.json, from its number of outputs."""
    if n_outputs not in _OUTPUTS_TO_LABELS:
        raise FerError(f"model has {n_outputs} outputs and no labels.json; expected 7 (fer7), "
                       "6 (merged6) or 8 (ferplus8) outputs", where="labels")
    return _OUTPUTS_TO_LABELS[n_outputs]


def _check_shapes(model, where) -> None:
    try:
        ishape = tuple(model.inputs[0].shape)[1:]
        oshape = tuple(model.outputs[0].shape)[1:]
    except (AttributeError, IndexError, TypeError):
        raise FerError("model has no single input/output", where=str(where)) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise FerError("expected a model with one input and one output", where=str(where))
    _check_io(ishape, oshape, where)


def _check_io(ishape: tuple, oshape: tuple, where) -> None:
    if ishape not in ((48, 48, 1), (48, 48)):
        raise FerError(f"model expects input {ishape}; expected 48x48x1 grey faces",
                       where=str(where))
    if len(oshape) != 1 or not oshape[0] or oshape[0] < 2:
        raise FerError(f"model output shape {oshape}; expected one score per class",
                       where=str(where))


def _file_id(f: Path) -> str:
    st = f.stat()
    key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    name = f.parent.name if f.name == MODEL_FILE else f.stem
    return f"{name}-{hashlib.sha1(key).hexdigest()[:8]}"


def _cache_dir() -> Path:
    return get_settings().cache_dir


def has_tensorflow() -> bool:
    """True when Keras and TensorFlow are installed (``fer-studio[train]``), without
    importing them."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("keras", "tensorflow"))


def needs_train(what: str, where: str | None = None) -> FerError:
    """The one message of a feature that needs TensorFlow on the runtime-only install."""
    return FerError(f"{what} needs TensorFlow, which the runtime install leaves out; "
                    f"install the full package: {TRAIN_EXTRA}", where=where or what)


def runtime_file(path) -> Path:
    """Where the exported runtime model of a run dir or .keras file lives (``model.tflite``)."""
    return model_file(path).with_suffix(RUNTIME_SUFFIX)


def runtime_record_file(path) -> Path:
    return model_file(path).with_suffix(RECORD_SUFFIX)


def read_runtime(path) -> tuple[bytes | None, str]:
    """(flatbuffer, "") of the exported runtime model of ``path`` when it was made from this
    very .keras (the sha256 in its record matches); else (None, why not)."""
    f, rec_f = runtime_file(path), runtime_record_file(path)
    if not f.is_file() or not rec_f.is_file():
        return None, f"no {f.name} with its {rec_f.name} beside the model"
    try:
        rec = json.loads(rec_f.read_text(encoding="utf-8"))
        sha = rec["source_sha256"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None, f"{rec_f.name} is not a valid export record"
    src = model_file(path)
    if src.is_file() and file_sha256(src) != sha:
        return None, f"{f.name} was exported from another {src.name}"
    return f.read_bytes(), ""


# --------------------------------------------------------------------------- calibration

def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) row-wise: probabilities with the same argmax and order, sharper for
    T < 1, softer for T > 1; T = 1 returns ``probs`` unchanged."""
    probs = np.asarray(probs, dtype=np.float32)
    t = float(temperature)
    if t == 1.0 or probs.size == 0:
        return probs
    z = np.log(np.clip(probs, 1e-12, None)) / t
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


# --------------------------------------------------------------------------- backends

def _probe() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)


def _bucket(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return n


class _KerasBackend:
    name = "keras"

    def __init__(self, model):
        import tensorflow as tf  # fer-studio[train] only: FerModel asks for it lazily
        rank3 = len(model.inputs[0].shape) == 3

        def call(x):
            return model(x[..., 0] if rank3 else x, training=False)
        self._fn = tf.function(call, reduce_retracing=True,
                               input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.float32)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(x), dtype=np.float32)


def _interpreter_class():
    """LiteRT's interpreter (``ai-edge-litert``); TensorFlow's deprecated ``tf.lite`` one only
    where LiteRT is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        import tensorflow as tf
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated",
                                category=UserWarning)
        return tf.lite.Interpreter


class _TFLiteBackend:
    """A TFLite flatbuffer on LiteRT's interpreter (XNNPACK); ``shapes`` = (input, output)."""

    name = "tflite"

    def __init__(self, blob: bytes):
        self.blob = blob
        self._pools: dict[int, queue.SimpleQueue] = {}
        self._pools_lock = threading.Lock()
        self._release(self._new(1))  # fails now if the flatbuffer is bad

    def _pool(self, batch: int) -> queue.SimpleQueue:
        with self._pools_lock:
            return self._pools.setdefault(batch, queue.SimpleQueue())

    def _new(self, batch: int):
        it = _interpreter_class()(model_content=self.blob, num_threads=get_settings().tflite_threads)
        if len(it.get_input_details()) != 1 or len(it.get_output_details()) != 1:
            raise FerError("expected a model with one input and one output", where="tflite")
        inp = it.get_input_details()[0]
        self.shapes = (tuple(int(v) for v in inp["shape"][1:]),
                       tuple(int(v) for v in it.get_output_details()[0]["shape"][1:]))
        if tuple(inp["shape"])[0] != batch:
            it.resize_tensor_input(inp["index"], [batch, 48, 48, 1], strict=False)
        with native_logs.first_time("tflite-allocate"):  # the XNNPACK start-up line
            it.allocate_tensors()
        return batch, it, inp["index"], it.get_output_details()[0]["index"]

    def _release(self, item):
        self._pool(item[0]).put(item)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        try:
            item = self._pool(b).get_nowait()
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
    """The flatbuffer of ``model``: the cached conversion, else converted now (the caller keeps
    it once it passed the parity check)."""
    if cache_file is not None and cache_file.is_file():
        return cache_file.read_bytes()
    from fer_core.converter import tflite_bytes  # the one converter
    return tflite_bytes(model)


# --------------------------------------------------------------------------- the model

_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict = {}
CACHE_SIZE = 8


class FerModel:
    """A classifier of 48x48 grey faces with its labels, id, calibration and fastest backend.

    Build with :meth:`load` (a saved model, cached) or :meth:`wrap` (a keras.Model in memory).
    ``backend``: "auto" (LiteRT, else Keras), "tflite" (LiteRT) or "keras". ``runtime_blob``
    (with ``model=None``): an exported, parity-checked flatbuffer to run without TensorFlow;
    the Keras model (``model``) is then read from ``path`` only if something asks for it.
    """

    def __init__(self, model, labels, *, model_id: str, path: Path | None = None,
                 label_set: str | None = None, calibration: Calibration | None = None,
                 backend: str = "auto", tflite_cache: Path | None = None,
                 runtime_blob: bytes | None = None):
        if backend not in ("auto", "tflite", "keras"):
            raise FerError(f"unknown backend {backend!r}; expected auto, tflite or keras",
                           where="backend")
        where = str(path or model_id)
        self._model = model
        self._lazy_lock = threading.Lock()
        self.path = path
        self.model_id = model_id
        self._requested = backend
        self.backend_error: str | None = None
        self._logits = False
        if model is None:  # an exported flatbuffer: no Keras, no TensorFlow
            if runtime_blob is None:
                raise FerError("expected a keras.Model or an exported model", where=where)
            if backend == "keras":
                raise needs_train("the Keras backend", where=where)
            try:
                tfl = _TFLiteBackend(runtime_blob)
            except FerError:
                raise
            except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer
                raise FerError(f"cannot read the exported model ({type(e).__name__}: "
                               f"{str(e)[:200]})", where=where) from None
            ishape, oshape = tfl.shapes
            _check_io(ishape, oshape, where)
        else:
            _check_shapes(model, where)
            oshape = tuple(model.outputs[0].shape)[1:]
        n_out = int(oshape[-1])
        self.labels = tuple(labels) if labels is not None else default_labels(n_out)
        if len(self.labels) != n_out:
            raise FerError(f"{len(self.labels)} labels for a model with {n_out} outputs",
                           where=where)
        if label_set is None:
            try:
                label_set = detect_label_set(self.labels)
            except FerError:
                label_set = "custom"
        self.label_set = label_set
        self.calibration = calibration or Calibration()
        self.n_classes = n_out
        self.calls = 0        # model invocations (for tests and stats)
        self.faces_seen = 0
        self._count_lock = threading.Lock()
        if model is None:
            self.backend = tfl
            self._check_outputs(tfl(_probe()[:1]))  # batch 1: the interpreter made above
        else:
            self.backend = self._make_backend(_KerasBackend(model), backend, tflite_cache)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, path=None, backend: str = "auto") -> "FerModel":
        """The model ``path`` names (run dir, .keras file or run id; None: ``FER_MODEL`` or the
        shipped model; :func:`fer_core.resolve.resolve_model`), loaded once per (model file, its
        size and mtime, the mtimes of its labels and calibration files, backend) and shared;
        thread-safe."""
        p = resolve_model(path)
        f = model_file(p)
        key = (str(f.resolve()), stamp(p), backend)
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
            key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
        with key_lock:  # one load per key; other threads wait for it
            with _CACHE_LOCK:
                if key in _CACHE:
                    return _CACHE[key]
            obj = cls._from_file(p, f, backend)
            with _CACHE_LOCK:
                _CACHE[key] = obj
                _KEY_LOCKS.pop(key, None)
                while len(_CACHE) > CACHE_SIZE:
                    _CACHE.popitem(last=False)
        return obj

    @classmethod
    def _from_file(cls, p: Path, f: Path, backend: str) -> "FerModel":
        names, lset = read_labels(p)
        model_id = _file_id(f)
        common = dict(model_id=model_id, path=f, label_set=lset,
                      calibration=read_calibration(p), backend=backend)
        cache = _cache_dir() / "tflite" / f"{model_id}-v{TFLITE_FORMAT}.tflite"
        if backend != "keras":
            blob, why = read_runtime(f)
            if blob is not None:
                return cls(None, names, runtime_blob=blob, **common)
            if not has_tensorflow():
                raise needs_train(f"running a model without an exported {runtime_file(f).name} "
                                  f"({why}; make one with `fer-studio export RUN --format "
                                  f"tflite`)", where=str(f))
            if cache.is_file():  # converted and checked by an earlier load: no TensorFlow
                try:
                    return cls(None, names, runtime_blob=cache.read_bytes(), **common)
                except (FerError, OSError):
                    cache.unlink(missing_ok=True)  # unreadable: convert again below
        elif not has_tensorflow():
            raise needs_train("the Keras backend", where=str(f))
        model = load_keras(f)
        return cls(model, names, tflite_cache=cache, **common)

    @classmethod
    def wrap(cls, model, labels=None, backend: str = "keras") -> "FerModel":
        """A keras.Model in memory (uncalibrated); with the Keras backend it is cached on the
        model object, so repeated calls reuse the traced function."""
        if backend == "keras":
            cached = model.__dict__.get("_fer_model")
            if cached is not None and (labels is None or tuple(labels) == cached.labels):
                return cached
        obj = cls(model, labels, model_id=f"{model.name}-mem{id(model) & 0xffffff:06x}",
                  backend=backend)
        if backend == "keras":
            object.__setattr__(model, "_fer_model", obj)  # bypass Keras' attribute tracking
        return obj

    @classmethod
    def of(cls, model, labels=None) -> "FerModel":
        """A FerModel from a FerModel, a keras.Model, or a path or run id (:meth:`load`)."""
        if isinstance(model, FerModel):
            return model
        if hasattr(model, "inputs") and hasattr(model, "outputs"):
            return cls.wrap(model, labels)
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise FerError(f"expected a model path or keras.Model, got {type(model).__name__}",
                           where="model")
        return cls.load(model)

    def _check_outputs(self, ref: np.ndarray) -> None:
        if not np.all(np.isfinite(ref)):
            raise FerError("model outputs NaN/inf", where=str(self.path or self.model_id))
        if ref.min() < -1e-6 or not np.allclose(ref.sum(1), 1.0, atol=1e-3):
            self._logits = True  # logits: normalised in forward

    def _make_backend(self, keras_be, backend: str, cache_file: Path | None):
        probe = _probe()
        ref = keras_be(probe)  # also traces the Keras function, so a first call pays no trace
        self._check_outputs(ref)
        if backend == "keras":
            return keras_be
        try:
            blob = _tflite_blob(self._model, cache_file)
            tfl = _TFLiteBackend(blob)
            got = np.concatenate([tfl(probe[i:i + 1]) for i in range(4)])
            if np.abs(got - ref).max() > 1e-3:
                raise ValueError(f"TFLite differs from Keras by {np.abs(got - ref).max():.2g}")
            if cache_file is not None and not cache_file.is_file():
                try:  # only a conversion that passed the check is kept
                    atomic.write_bytes(cache_file, blob)
                except OSError:
                    pass  # the cache is an optimisation only
            return tfl
        except Exception as e:  # noqa: BLE001 - conversion is an optimisation
            if cache_file is not None:
                cache_file.unlink(missing_ok=True)
            if backend == "tflite":
                raise FerError(f"cannot run the model with TFLite ({e})",
                               where=str(self.path or self.model_id)) from None
            self.backend_error = str(e)
            return keras_be

    # ---- the Keras side, on first use -----------------------------------------------------
    @property
    def model(self):
        """The keras.Model (loaded from ``path`` on first use for a model run on LiteRT:
        Grad-CAM, feature maps, fine-tuning; needs ``fer-studio[train]``)."""
        if self._model is None:
            with self._lazy_lock:
                if self._model is None:
                    if not has_tensorflow():
                        raise needs_train("the Keras model (Grad-CAM, feature maps, training)",
                                          where=str(self.path or self.model_id))
                    self._model = load_keras(self.path)
        return self._model

    # ---- properties -----------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def runtime_blob(self) -> bytes | None:
        """The flatbuffer this model runs on LiteRT (exported, or converted and checked
        against Keras at load), or None on the Keras backend."""
        return getattr(self.backend, "blob", None)

    @property
    def name(self) -> str:
        """Readable name: the run directory, the .keras file's stem, or the model's name."""
        if self.path is None:
            return getattr(self._model, "name", "model")
        return self.path.parent.name if self.path.name == MODEL_FILE else self.path.stem

    @property
    def default_tta(self) -> bool:
        return self.calibration.tta_default

    def info(self) -> dict:
        cal = self.calibration
        return {"model_id": self.model_id, "model_path": str(self.path or ""),
                "labels": list(self.labels), "label_set": self.label_set,
                "backend": self.backend_name, "temperature": cal.temperature,
                "temperature_tta": cal.temperature_tta, "calibrated": cal.fitted,
                "tta_default": cal.tta_default}

    # ---- faces -> probabilities -----------------------------------------------------------
    def forward(self, faces, tta: bool = False, batch_size: int = BUCKETS[-1],
                progress=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Uncalibrated probabilities of the faces and (``tta``) of their mirror images:
        ``(plain, mirrored or None)``, each float32 (N, C). Faces and mirrors share model calls.
        ``progress(done, total)`` is called after each chunk, in faces."""
        x = vision.as_face_batch(faces)
        n_faces = x.shape[0]
        if n_faces == 0:
            empty = np.empty((0, self.n_classes), dtype=np.float32)
            return empty, (empty if tta else None)
        if tta:
            x = np.concatenate([x, x[:, :, ::-1]])
        n = x.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        step = max(1, int(batch_size))
        for start in range(0, n, step):
            chunk = x[start:start + step]
            m = chunk.shape[0]
            b = _bucket(m)
            if b != m:
                chunk = np.concatenate([chunk, np.zeros((b - m, 48, 48, 1), np.float32)])
            out[start:start + m] = self.backend(np.ascontiguousarray(chunk))[:m]
            with self._count_lock:
                self.calls += 1
                self.faces_seen += m
            if progress is not None:
                progress((start + m) * n_faces // n, n_faces)
        if self._logits:
            out -= out.max(1, keepdims=True)
            np.exp(out, out=out)
        out /= out.sum(1, keepdims=True)
        return (out[:n_faces], out[n_faces:]) if tta else (out, None)

    def finish(self, plain: np.ndarray, mirrored: np.ndarray | None = None,
               calibrated: bool = True) -> np.ndarray:
        """The probabilities the product shows: the mean of ``plain`` and ``mirrored`` (when
        given), scaled by the calibration's temperature for that TTA setting."""
        p = plain if mirrored is None else 0.5 * (plain + mirrored)
        if calibrated:
            p = apply_temperature(p, self.calibration.for_tta(mirrored is not None))
        return np.asarray(p, dtype=np.float32)

    def predict_proba(self, faces, tta: bool | None = None, calibrated: bool = True,
                      batch_size: int = BUCKETS[-1], progress=None) -> np.ndarray:
        """Probabilities float32 (N, C) for uint8 faces (N, 48, 48) or (N, 48, 48, 1).
        ``tta`` (default :attr:`default_tta`): average each face with its mirror image;
        ``calibrated``: apply the temperature of ``calibration.json`` (T=1 without one)."""
        tta = self.default_tta if tta is None else bool(tta)
        return self.finish(*self.forward(faces, tta, batch_size, progress), calibrated=calibrated)

    # ---- probabilities -> results ---------------------------------------------------------
    def describe(self, probs: np.ndarray, boxes=None, top_k: int = 3) -> list[FacePrediction]:
        """One :class:`FacePrediction` per row of ``probs`` (``boxes`` default [0, 0, 48, 48]);
        ``top_k`` labels by falling probability, ties in label order."""
        probs = np.asarray(probs)
        if boxes is None:
            boxes = [[0, 0, 48, 48]] * len(probs)
        k = max(1, min(int(top_k), self.n_classes))
        out = []
        for box, p in zip(boxes, probs):
            order = top_k_order(p)
            out.append(FacePrediction(
                box=[int(v) for v in box], emotion=self.labels[int(order[0])],
                scores={name: float(v) for name, v in zip(self.labels, p)},
                top_k=[(self.labels[int(i)], float(p[i])) for i in order[:k]]))
        return out


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()
