"""A saved model on disk: the ``.keras`` file and the sidecar files beside it.

Both :mod:`fer_core.model` (FerModel) and :mod:`fer_core.runs` (run directories) read models
through this module, so neither imports the other. A model is a run directory holding
``model.keras``, or any other ``<name>.keras`` file; its sidecars sit beside it:

- labels: ``labels.json`` in the run directory, or ``<name>.labels.json``
  (:func:`read_labels`);
- calibration: ``calibration.json`` in the run directory, or ``<name>.calibration.json``
  (:func:`calibration_file`, :func:`read_calibration`; written by
  :func:`fer_core.evaluation.write_calibration`);
- :func:`stamp`: sizes and mtimes of the model and its sidecars, what a cached model depends on;
- :func:`load_keras`: the one reader of ``.keras`` files (``safe_mode=True``).

No heavy imports: Keras is imported inside :func:`load_keras` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from fer_core.atomic import read_json
from fer_core.errors import FerError
from fer_core.labels import detect_label_set

MODEL_FILE = "model.keras"
CALIBRATION_FILE = "calibration.json"
# Flip TTA for a model whose calibration.json does not decide it (see ``tta_default`` there).
DEFAULT_TTA = False


def model_file(path) -> Path:
    """The .keras file of a run directory or .keras path."""
    p = Path(os.path.expanduser(str(path)))
    return p / MODEL_FILE if p.is_dir() else p


def calibration_file(path) -> Path:
    """Where the calibration of a model lives: ``calibration.json`` in its run directory, or
    ``<name>.calibration.json`` beside another .keras file."""
    f = model_file(path)
    return f.parent / CALIBRATION_FILE if f.name == MODEL_FILE else \
        f.with_suffix(".calibration.json")


def stamp(path) -> tuple:
    """(size, mtime_ns) of the model file, its labels file and its calibration file ((0, 0)
    for a missing one): what a cached model depends on."""
    f = model_file(path)
    labels = f.parent / "labels.json" if f.name == MODEL_FILE else f.with_suffix(".labels.json")
    out = []
    for p in (f, labels, calibration_file(path)):
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((0, 0))
    return tuple(out)


def load_keras(path, compile: bool = False):
    """The one reader of .keras files (safe_mode=True): a run dir (its model.keras) or a .keras
    file. A missing, non-Keras, corrupt or unsafe file raises :class:`FerError` naming it."""
    import keras

    p = model_file(path)
    if not p.exists():
        raise FerError("model file not found (expected a run directory with model.keras "
                       "or a .keras file)", where=str(p), status=404)
    if p.suffix != ".keras":
        raise FerError("not a Keras model file: expected a .keras file", where=str(p))
    if not zipfile.is_zipfile(p):
        raise FerError("not a valid .keras file (expected a Keras 3 zip archive)", where=str(p))
    try:
        return keras.saving.load_model(p, compile=compile, safe_mode=True)
    except Exception as e:  # corrupt archive, unknown layer, unsafe lambda ...
        raise FerError(f"cannot load model: {type(e).__name__}: {str(e)[:300]}",
                       where=str(p)) from None


def read_labels(path) -> tuple[tuple[str, ...] | None, str | None]:
    """(label names, label set) a model carries: ``labels.json`` of a run dir (or of the run
    dir of a model.keras), or ``<name>.labels.json`` beside another .keras file; either a
    list of names or ``{"labels": [...], "label_set": "fer7"}``. (None, None) when there is
    none; a malformed file raises :class:`FerError`. The set is None for unknown label lists.
    """
    p = Path(path)
    if p.is_dir():
        f = p / "labels.json"
    elif p.name == MODEL_FILE:
        f = p.parent / "labels.json"
    else:
        f = p.with_suffix(".labels.json")
    if not f.is_file():
        return None, None
    data = read_json(f, None)
    names = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FerError('expected a list of label names or {"labels": [...], "label_set": ...}',
                       where=str(f))
    lset = data.get("label_set") if isinstance(data, dict) else None
    if lset is None:
        try:
            lset = detect_label_set(names)
        except FerError:
            lset = None
    return tuple(names), lset


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Temperatures for plain and flip-TTA probabilities (1.0 = uncalibrated) and the record
    they come from (``calibration.json``; empty when there is none or it is stale)."""

    temperature: float = 1.0
    temperature_tta: float = 1.0
    tta_default: bool = DEFAULT_TTA
    record: dict = field(default_factory=dict)
    note: str = ""

    def for_tta(self, tta: bool) -> float:
        return self.temperature_tta if tta else self.temperature

    @property
    def fitted(self) -> bool:
        return bool(self.record)


def read_calibration(path) -> Calibration:
    """The calibration of the model at ``path``. None is T=1; a file fitted for another
    model file (its sha256 differs) is ignored, with ``note`` saying so; a malformed file
    raises :class:`FerError` naming it."""
    f = calibration_file(path)
    if not f.is_file():
        return Calibration()
    try:
        rec = json.loads(f.read_text(encoding="utf-8"))
        t, t_tta = float(rec["temperature"]), float(rec.get("temperature_tta", rec["temperature"]))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise FerError(f"expected JSON with a numeric 'temperature' ({type(e).__name__})",
                       where=str(f)) from None
    if not (0.05 <= t <= 20 and 0.05 <= t_tta <= 20):
        raise FerError(f"temperature must be in [0.05, 20], got {t} / {t_tta}", where=str(f))
    sha = rec.get("model_sha256")
    if sha and sha != file_sha256(model_file(path)):
        return Calibration(note=f"{f.name} was fitted for another model file; using T=1 "
                                "(run python -m fer_core calibrate again)")
    return Calibration(t, t_tta, bool(rec.get("tta_default", DEFAULT_TTA)), rec)
