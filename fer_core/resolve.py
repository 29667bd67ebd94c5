"""The one model resolver: which model a name, a path or a run id means.

    path = resolve_model(None, settings)          # FER_MODEL, else the shipped model
    path = resolve_model("20260101-120000-vgg")   # a run id, in the runs folder
    path = resolve_model("~/m/run", where="--model")  # a run or model directory, or a .keras file

Every entry point that picks a model goes through :func:`resolve_model`: the CLI (``--model``),
the API (the model an instance serves before any promotion), the app's model picker, jobs
(fine-tuning's base model, video jobs), evaluation and the Python API
(``fer_core.load_model()``); :meth:`fer_core.model.FerModel.load` resolves what it is given
too. The rules, in order:

1. nothing named (None or ""): ``FER_MODEL`` (the settings' ``model``; itself a path or a run
   id), else the shipped default model (:data:`DEFAULT_MODEL`);
2. a path that exists (``~`` expanded): a directory holding ``model.keras`` (a run directory,
   the shipped model's folder) or a ``.keras`` file;
3. else a valid run id (:func:`validate_run_id`): that run in the runs folder.

The answer is the model's location (the directory, or the ``.keras`` file), because its
sidecars (labels, calibration, recipe) sit beside the file; :func:`fer_core.model_files.
model_file` gives the ``.keras`` file itself. Anything else raises :class:`FerError` naming
where the name came from (``--model``, ``FER_MODEL``, ``model``) and what was expected.

Run ids live here too (they are names for places on disk): :data:`RUN_ID_RE`,
:func:`validate_run_id` and :func:`run_path`; :mod:`fer_core.runs` re-exports them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fer_core.errors import FerError
from fer_core.model_files import MODEL_FILE
from fer_core.paths import DEFAULT_MODEL
from fer_core.settings import Settings, get_settings

__all__ = ["resolve_model", "configured_model", "find_run", "run_path", "validate_run_id",
           "add_model_argument", "default_label", "RUN_ID_RE", "DEFAULT_MODEL"]

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,119}$")
EXPECTED = "a run id (in the runs folder), a run or model directory holding model.keras, " \
           "or a .keras file"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe directory name, else raise :class:`FerError`."""
    if (not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or ".." in run_id):
        raise FerError(f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.', "
                       "starting with a letter or digit, no '/' or '..' (at most 120 chars)",
                       where="run_id")
    return run_id


def run_path(run: str | os.PathLike, settings: Settings | None = None) -> Path:
    """A run's directory from an id (inside the runs folder) or an explicit path."""
    if isinstance(run, Path) or (isinstance(run, str) and (os.sep in run or "/" in run)):
        return Path(run)
    return (settings or get_settings()).runs_dir / validate_run_id(run)


def _is_run_id(name: str) -> bool:
    return "/" not in name and os.sep not in name and ".." not in name and \
        bool(RUN_ID_RE.match(name))


def find_run(name, settings: Settings | None = None, *, where: str = "run") -> Path:
    """Rules 2 and 3 without the model check: an existing path (``~`` expanded), else a run id
    in the runs folder (a run still training, or one to resume, may have no model yet)."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    p = Path(text).expanduser()
    if not p.exists() and isinstance(name, str) and _is_run_id(text):
        by_id = (settings or get_settings()).runs_dir / text
        if by_id.exists():
            p = by_id
    if not p.exists():
        raise FerError(f"model not found: no such run or model file (expected {EXPECTED})",
                       where=f"{where} {text}", status=404)
    return p


def _locate(name, settings: Settings | None, where: str) -> Path:
    """:func:`find_run`, checked to hold a model."""
    p = find_run(name, settings, where=where)
    if p.is_dir():
        if not (p / MODEL_FILE).is_file():
            raise FerError("model not found: this folder has no model.keras (not a run, or "
                           "still training); train one (python -m fer_core train) or name "
                           "another run, model directory or .keras file", where=f"{where} {p}")
    elif p.suffix != ".keras":
        raise FerError("not a Keras model file: expected a .keras file (or a run directory)",
                       where=f"{where} {p}")
    return p


def resolve_model(model=None, settings: Settings | None = None, *,
                  where: str = "model") -> Path:
    """The model ``model`` names (see the module doc for the rules); ``settings`` default to
    the process's (:func:`fer_core.settings.get_settings`). ``where`` names the source of
    ``model`` in errors (``--model``, a form field, ...)."""
    if model is not None and str(model).strip():
        return _locate(model, settings, where)
    settings = settings or get_settings()
    if settings.model:
        return _locate(settings.model, settings, "FER_MODEL")
    if not (DEFAULT_MODEL / MODEL_FILE).is_file():
        raise FerError("the shipped default model is missing; train one (python -m fer_core "
                       "train DATA) and pass --model RUN_DIR or set FER_MODEL",
                       where=str(DEFAULT_MODEL), status=404)
    return DEFAULT_MODEL


def add_model_argument(parser, what: str = "the model") -> None:
    """The ``--model`` option of every CLI command that uses a model (resolved by
    :func:`resolve_model` with ``where="--model"``)."""
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"{what}: a run id, a run directory or a .keras file (default: "
                             "FER_MODEL, else the shipped model)")


def default_label(path: Path, settings: Settings | None = None) -> str:
    """How a report names the model used when none was named: ``FER_MODEL name`` or
    ``shipped default name``."""
    source = "FER_MODEL" if (settings or get_settings()).model else "shipped default"
    return f"{source} {Path(path).name}"


def configured_model(settings: Settings | None = None) -> Path | None:
    """The model used when none is named (``FER_MODEL``, else the shipped model), or None when
    it is missing or wrong (callers that can go on without it: listings, promotion)."""
    try:
        return resolve_model(None, settings)
    except FerError:
        return None
