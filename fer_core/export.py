"""Export a model for other runtimes, with its parity against Keras checked and recorded.

    rec = export("models/my-run", "tflite")                  # -> models/my-run/model.tflite
    rec = export(run, "onnx", out="m.onnx", data="demo")     # parity on the data's val split
    rec = export(run, "tflite", int8=True, data=FER2013_CSV)  # int8; accuracy loss measured

Formats: ``tflite`` (TensorFlow's converter from a SavedModel; float, or ``int8`` weights and
activations calibrated on training faces, float input/output), ``onnx`` (Keras 3's own
``model.export(format="onnx")``, which runs tf2onnx) and ``saved_model`` (Keras 3's
``model.export(format="tf_saved_model")``, a folder). The exported model is run on the faces of
``data``'s validation split (FER2013 PublicTest) or, without data, on 512 random faces, by its
own runtime (LiteRT, ONNX Runtime, TensorFlow), and compared with Keras: for float formats the
top class must agree on at least 99.5 % of the faces and every probability be within 1e-3; for
int8 the accuracy loss on labelled data must be at most 0.5 points (95 % top-class agreement
on unlabelled faces). A failed check writes
nothing and raises :class:`FerError`. The record (format, source sha256, parity figures) goes to
``<out>.json``; a ``model.tflite`` beside ``model.keras`` is what :class:`FerModel` runs without
TensorFlow. An export beside a run's model also gets a section in its ``model_card.md``, and
holds that run's writer lock (:func:`fer_core.runs.run_lock`) for the whole export.

Needs ``fer-studio[train]`` (TensorFlow, Keras, tf2onnx, ONNX Runtime).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from fer_core import atomic, runs
from fer_core.converter import four_d, input_signature, tflite_bytes
from fer_core.errors import FerError

FORMATS = ("tflite", "onnx", "saved_model")
MIN_AGREEMENT = 0.995
MAX_PROB_DIFF = 1e-3
MAX_INT8_LOSS_POINTS = 0.5
MIN_INT8_AGREEMENT = 0.95
INT8_CALIBRATION_FACES = 400
CARD_BEGIN, CARD_END = "<!-- exports: begin -->", "<!-- exports: end -->"


def default_out(path, fmt: str, int8: bool = False) -> Path:
    """``model.tflite`` / ``model.int8.tflite`` / ``model.onnx`` / ``saved_model/`` beside the
    model file."""
    from fer_core.model_files import model_file
    f = model_file(path)
    if fmt == "saved_model":
        return f.parent / (f"{f.stem}.saved_model" if f.name != "model.keras" else "saved_model")
    return f.with_suffix((".int8" if int8 else "") + (".tflite" if fmt == "tflite" else ".onnx"))


# --------------------------------------------------------------------------- runners

def _run_tflite(path: Path):
    from fer_core.model import _TFLiteBackend
    be = _TFLiteBackend(path.read_bytes())
    return lambda x: be(x)


def _run_onnx(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _run_saved_model(path: Path):
    import tensorflow as tf
    loaded = tf.saved_model.load(str(path))
    return lambda x: np.asarray(loaded.serve(tf.constant(x)))


RUNNERS = {"tflite": _run_tflite, "onnx": _run_onnx, "saved_model": _run_saved_model}


def batched(fn, x: np.ndarray, batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        out.append(np.asarray(fn(np.ascontiguousarray(chunk)), np.float32)[:len(chunk)])
    return np.concatenate(out)


def _probs(out: np.ndarray) -> np.ndarray:
    """Rows as probabilities (a model with a logits head is softmaxed, as FerModel does)."""
    out = np.asarray(out, np.float64)
    if out.min() < -1e-6 or not np.allclose(out.sum(1), 1.0, atol=1e-3):
        out = np.exp(out - out.max(1, keepdims=True))
    return out / out.sum(1, keepdims=True)


def parity(reference: np.ndarray, exported: np.ndarray, labels=None) -> dict:
    """Agreement of two (N, C) probability arrays: top-class agreement, the largest probability
    difference and, with ``labels``, both accuracies and the loss in points."""
    a, b = _probs(reference), _probs(exported)
    out = {"faces": int(len(a)),
           "top1_agreement": round(float(np.mean(a.argmax(1) == b.argmax(1))), 6),
           "max_prob_diff": float(f"{np.abs(a - b).max():.3g}") if len(a) else 0.0}
    if labels is not None:
        labels = np.asarray(labels)
        acc_a = float(np.mean(a.argmax(1) == labels)) * 100
        acc_b = float(np.mean(b.argmax(1) == labels)) * 100
        out.update(keras_accuracy=round(acc_a, 2), exported_accuracy=round(acc_b, 2),
                   accuracy_loss_points=round(acc_a - acc_b, 2))
    return out


def check_parity(fmt: str, int8: bool, p: dict) -> list[str]:
    """What fails the checks: float formats must agree with Keras on the top class for
    ``MIN_AGREEMENT`` of the faces with every probability within ``MAX_PROB_DIFF``; int8 may
    lose at most ``MAX_INT8_LOSS_POINTS`` of accuracy on labelled faces (without labels its
    top class must agree on ``MIN_INT8_AGREEMENT`` of the faces)."""
    bad = []
    need = MIN_INT8_AGREEMENT if int8 and "accuracy_loss_points" not in p else \
        (0.0 if int8 else MIN_AGREEMENT)
    if p["top1_agreement"] < need:
        bad.append(f"top class agrees on {p['top1_agreement']:.2%} of the faces "
                   f"(at least {need:.1%} needed)")
    if not int8 and p["max_prob_diff"] > MAX_PROB_DIFF:
        bad.append(f"probabilities differ by up to {p['max_prob_diff']:.2g} (at most "
                   f"{MAX_PROB_DIFF:g} for a float format)")
    if int8 and p.get("accuracy_loss_points", 0.0) > MAX_INT8_LOSS_POINTS:
        bad.append(f"int8 loses {p['accuracy_loss_points']} accuracy points (at most "
                   f"{MAX_INT8_LOSS_POINTS})")
    return bad


def _faces(data, split: str | None):
    """(check faces, their labels or None, where they come from, calibration faces)."""
    if data is None:
        rng = np.random.default_rng(0)
        faces = rng.integers(0, 256, (512, 48, 48), dtype=np.uint8)
        return faces, None, "512 random faces", faces[:INT8_CALIBRATION_FACES]
    from fer_core.data import load
    ds = load(data)
    split = split or ("val" if np.any(ds.split == "val") else "test")
    pick = ds.split == split
    if not pick.any():
        raise FerError(f"the data has no {split!r} split", where="--split")
    train = np.flatnonzero(ds.split == "train")
    rng = np.random.default_rng(0)
    calib = ds.images[rng.choice(train, min(INT8_CALIBRATION_FACES, len(train)), replace=False)] \
        if len(train) else ds.images[pick][:INT8_CALIBRATION_FACES]
    name = "demo" if str(data) == "demo" else Path(str(data)).name
    return ds.images[pick], ds.labels[pick], f"{name} [{split}]", calib


# --------------------------------------------------------------------------- export

def export(path, fmt: str, out=None, *, int8: bool = False, data=None,
           split: str | None = None, check: bool = True) -> dict:
    """Export the model at ``path`` (run dir or .keras file) to ``fmt``; returns the record
    written to ``<out>.json`` (see the module docstring)."""
    from fer_core.model import has_tensorflow, needs_train
    from fer_core.model_files import model_file

    if fmt not in FORMATS:
        raise FerError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}",
                       where="--format")
    if int8 and fmt != "tflite":
        raise FerError("int8 quantisation is available for --format tflite only", where="--int8")
    if not has_tensorflow():
        raise needs_train("export", where="export")
    src = model_file(path)
    out = Path(os.path.expanduser(str(out))) if out else default_out(path, fmt, int8)
    # into the model's own run directory: that run's writer lock, taken before the long work
    lock = runs.model_lock(src, "export") if out.parent.resolve() == src.parent.resolve() \
        else contextlib.nullcontext()
    with lock:
        return _export(src, fmt, out, int8, data, split, check)


def _export(src: Path, fmt: str, out: Path, int8: bool, data, split, check: bool) -> dict:
    from fer_core.model_files import file_sha256, load_keras

    model = load_keras(src)
    if out.exists() and (out.is_dir() != (fmt == "saved_model")):
        raise FerError("exists and is a " + ("folder" if out.is_dir() else "file"), where=str(out))
    faces, labels, faces_from, calib = _faces(data, split)
    x = np.asarray(faces, np.float32)[..., None]
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fer-export-", dir=out.parent) as tmp:
        tmp_out = Path(tmp) / ("model" if fmt == "saved_model" else f"model{out.suffix}")
        if fmt == "tflite":
            tmp_out.write_bytes(tflite_bytes(model, calib if int8 else None))
        elif fmt == "onnx":
            four_d(model).export(str(tmp_out), format="onnx", verbose=False,
                                  input_signature=input_signature())
        else:
            four_d(model).export(str(tmp_out), format="tf_saved_model", verbose=False)
        seconds = time.perf_counter() - t0
        ref_model = four_d(model)
        ref = batched(lambda b: ref_model(b, training=False), x, 256)
        got = batched(RUNNERS[fmt](tmp_out), x)
        p = parity(ref, got, labels)
        p["faces_from"] = faces_from
        bad = check_parity(fmt, int8, p) if check else []
        if bad:
            raise FerError("parity check failed, nothing written: " + "; ".join(bad),
                           where=str(out))
        if fmt == "saved_model":
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp_out, out)
        else:
            os.replace(tmp_out, out)
    import keras
    size = (sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir()
            else out.stat().st_size)
    record = {"format": fmt, "int8": bool(int8), "file": out.name,
              "source": src.name, "source_sha256": file_sha256(src),
              "bytes": int(size), "seconds": round(seconds, 1),
              "converter": {"tflite": "tf.lite.TFLiteConverter (SavedModel)",
                            "onnx": "keras.Model.export(format='onnx') / tf2onnx",
                            "saved_model": "keras.Model.export(format='tf_saved_model')"}[fmt],
              "keras_version": keras.__version__, "parity": p,
              "parity_checked": bool(check)}
    atomic.write_text(out.with_name(out.name + ".json"), json.dumps(record, indent=2) + "\n")
    if out.parent == src.parent:
        update_card(src.parent / "model_card.md", record)
    return record


def _card_line(rec: dict) -> str:
    p = rec["parity"]
    acc = (f"; accuracy {p['keras_accuracy']:.2f} % (Keras) -> {p['exported_accuracy']:.2f} % "
           f"({-p['accuracy_loss_points']:+.2f} points)" if "keras_accuracy" in p else "")
    return (f"- `{rec['file']}` ({rec['format']}{', int8' if rec['int8'] else ''}, "
            f"{rec['bytes'] / 1e6:.1f} MB, {rec['converter']}): top class agrees with Keras on "
            f"{p['top1_agreement']:.2%} of {p['faces']} faces of {p['faces_from']}, "
            f"probabilities within {p['max_prob_diff']:.2g}{acc}")


def update_card(card: Path, rec: dict) -> None:
    """Add or replace this export's line in the card's Exports section (between markers)."""
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8")
    lines = []
    if CARD_BEGIN in text and CARD_END in text:
        head, rest = text.split(CARD_BEGIN, 1)
        body, tail = rest.split(CARD_END, 1)
        lines = [ln for ln in body.strip().splitlines() if ln.startswith("- `")]
    else:
        head, tail = text.rstrip() + "\n\n", "\n"
    lines = [ln for ln in lines if not ln.startswith(f"- `{rec['file']}`")] + [_card_line(rec)]
    section = (CARD_BEGIN + "\n## Exports\n\nMade by `fer-studio export` (parity against the "
               "Keras model, measured by the export itself; records in `<file>.json`):\n\n"
               + "\n".join(sorted(lines)) + "\n" + CARD_END)
    atomic.write_text(card, head + section + tail)
