"""Promotion and rollback: which model every API instance serves, kept in the feedback store.

The store (SQLite for one host, PostgreSQL for a fleet; ``FER_FEEDBACK_DB``) holds the
**active-model pointer**, the **model files** that were ever promoted (the .keras bytes with
their labels and calibration, a few MB each: an instance on another host needs nothing but
the database), and the **history** (who, when, from which run, the comparison, the warning).

* :func:`promote` checks the run (exists, holds a finished model, 48x48x1 input, the same
  labels as the model it replaces), reads its ``comparison.json`` and, when the candidate was
  worse anywhere that matters, promotes it with a warning (the person decided). Blob, pointer
  and history row are written in one transaction: a store that fails midway changes nothing.
* :func:`rollback` returns to the model active before the last promotion still in force
  (promotions push, rollbacks pop); rolling back the first promotion returns every instance
  to its own ``FER_MODEL``. With nothing to roll back it raises :class:`FerError`.
* :func:`materialise` writes a stored model to a local folder (checked against its sha256),
  with the flatbuffer it runs on when the store holds one (schema 3: an instance without
  TensorFlow needs it), for :class:`fer_core.model.FerModel` to load; ``serve`` instances poll :meth:`FeedbackStore.
  active` and swap (:mod:`fer_core.api.service`).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from fer_core import model_files, runs
from fer_core.errors import FerError
from fer_core.resolve import find_run

CONFIGURED = None   # the pointer value meaning "each instance's own FER_MODEL"


def who_default() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return f"uid {os.getuid()}"


def resolve_run(run) -> Path:
    """A run id (in the runs folder) or a path -> the run's directory or .keras file
    (:func:`fer_core.resolve.find_run`)."""
    return find_run(run, where="run")


def _still_training(p: Path) -> bool:
    if not p.is_dir():
        return False
    try:
        if runs.read_metrics(p).get("status") == "running":
            return True
    except FerError:
        pass
    if (p / "job.json").exists():
        from fer_core.jobs import JobHandle
        return JobHandle(p).status == "running"
    return False


def candidate_record(run, reference_labels=None) -> dict:
    """The store record of the model at ``run`` (its bytes, labels, calibration), checked:
    a run still training, without a model, or incompatible raises :class:`FerError`."""
    from fer_core.model import FerModel
    from fer_core.model_files import calibration_file, model_file

    p = resolve_run(run)
    if _still_training(p):
        raise FerError("this run is still training; wait until it ends (or stop it) before "
                       "promoting it", where=f"run {p.name}", status=409)
    f = model_file(p)
    if not f.is_file():
        raise FerError("this run holds no model.keras (not a run, or it stopped before its "
                       "first epoch ended)", where=f"run {p.name}", status=422)
    fm = FerModel.load(p)   # input shape (48x48x1), outputs, labels: FerError when wrong
    if reference_labels is not None and tuple(reference_labels) != tuple(fm.labels):
        raise FerError(f"incompatible: the run predicts {list(fm.labels)} but the active "
                       f"model predicts {list(reference_labels)}", where=f"run {p.name}",
                       status=422)
    blob = f.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    cal = calibration_file(p)
    name = p.name if p.is_dir() else p.stem
    return {"model_id": f"{name}-{sha[:12]}", "sha256": sha, "name": name, "run": str(p),
            "labels": json.dumps({"labels": list(fm.labels), "label_set": fm.label_set}),
            "calibration": cal.read_text(encoding="utf-8") if cal.is_file() else None,
            "blob": blob, "runtime": runtime_part(fm, f, sha)}


def runtime_part(fm, f: Path, sha: str) -> dict | None:
    """The flatbuffer the model runs on (LiteRT) with its export record, for instances without
    TensorFlow: the run's exported ``model.tflite`` as it is, else the conversion
    :class:`~fer_core.model.FerModel` made and checked against Keras when it loaded the model.
    None when the model runs on Keras (a model LiteRT cannot run)."""
    from fer_core.model import runtime_record_file

    blob = fm.runtime_blob
    if blob is None:
        return None
    exported = runtime_record_file(f)
    if exported.is_file() and exported.with_suffix("").read_bytes() == blob:
        return {"record": exported.read_text(encoding="utf-8"), "blob": blob}
    record = {"format": "tflite", "int8": False, "file": "model.tflite", "source": f.name,
              "source_sha256": sha, "bytes": len(blob),
              "converter": "tf.lite.TFLiteConverter, at promotion",
              "parity": "checked at load against Keras on probe faces (within 1e-3)",
              "parity_checked": True}
    return {"record": json.dumps(record, indent=2) + "\n", "blob": blob}


def active_labels(store, configured_model) -> tuple[str, ...] | None:
    """The labels of the model the store makes active (or of ``configured_model``)."""
    ptr = store.active()["model_id"]
    if ptr is not None:
        rec = store.model_record(ptr)
        if rec is not None:
            return tuple(json.loads(rec["labels"])["labels"])
    if configured_model is not None and runs.has_model(configured_model):
        names, _ = model_files.read_labels(configured_model)
        if names:
            return tuple(names)
        from fer_core.model import FerModel
        return FerModel.load(configured_model).labels
    return None


def promote(store, run, *, who: str | None = None, configured_model=None) -> dict:
    """Make ``run`` the active model of every instance on ``store``. Returns ``{model_id,
    previous_model_id, version, warning, comparison}``."""
    from fer_core import compare

    before = store.active()
    reference = active_labels(store, configured_model)
    # the model, its labels, calibration, flatbuffer and comparison from one state of the run:
    # a writer (resume, swa, calibrate, export) is refused meanwhile, and refuses this
    path = resolve_run(run)
    with runs.model_read_lock(path, "promote"):
        record = candidate_record(path, reference)
        comparison = compare.read(record["run"])
    if before["model_id"] == record["model_id"]:
        raise FerError(f"{record['model_id']} is already the active model",
                       where=f"run {record['name']}", status=409)
    warning = None
    if comparison is None:
        warning = "no comparison.json: the candidate was not compared with the current model"
    elif comparison["verdict"]["worse"]:
        warning = ("the candidate is worse than the current model: "
                   + "; ".join(comparison["verdict"]["worse"]))
    out = store.set_active(action="promote", model_id=record["model_id"],
                           who=who or who_default(), expect_version=before["version"],
                           record=record, run=record["run"], warning=warning,
                           comparison=json.dumps(comparison) if comparison else None)
    return {**out, "sha256": record["sha256"], "warning": warning,
            "verdict": comparison["verdict"]["summary"] if comparison else None}


def active_stack(history: list[dict]) -> list:
    """The promotions in force, oldest first (``history`` newest first, as stored)."""
    stack: list = [CONFIGURED]
    for ev in reversed(history):
        if ev["action"] == "promote":
            stack.append(ev["model_id"])
        elif ev["action"] == "rollback" and len(stack) > 1:
            stack.pop()
    return stack


def rollback(store, *, who: str | None = None) -> dict:
    """Return every instance to the model active before the last promotion in force."""
    before = store.active()
    stack = active_stack(store.history(limit=100_000))
    if len(stack) < 2 or stack[-1] != before["model_id"]:
        raise FerError("nothing to roll back: no promotion is in force in this store",
                       where="rollback", status=409)
    target = stack[-2]
    out = store.set_active(action="rollback", model_id=target, who=who or who_default(),
                           expect_version=before["version"])
    return {**out, "warning": None}


def status(store, limit: int = 50) -> dict:
    """The active pointer and the history (comparisons as summaries), for pages and the API."""
    active = store.active()
    rec = store.model_record(active["model_id"]) if active["model_id"] else None
    history = []
    for ev in store.history(limit):
        comp = json.loads(ev["comparison"]) if ev.get("comparison") else None
        history.append({**{k: ev[k] for k in ("id", "at", "action", "model_id",
                                              "previous_model_id", "who", "run", "warning")},
                        "verdict": comp["verdict"]["summary"] if comp else None})
    return {"active": {**active, "sha256": rec["sha256"] if rec else None,
                       "run": rec["run"] if rec else None},
            "history": history, "can_rollback": len(active_stack(store.history(100_000))) > 1}


def materialise(store, model_id: str, root) -> Path:
    """The stored model ``model_id`` as a run folder under ``root`` (written once, atomically,
    checked against its sha256); returns the folder."""
    target = Path(root) / model_id
    if (target / "model.keras").is_file():
        return target
    rec = store.model_record(model_id, with_blob=True)
    if rec is None:
        raise FerError(f"the store names {model_id!r} as active but does not hold its file",
                       where="FER_FEEDBACK_DB", status=503)
    blob = bytes(rec["blob"])
    if hashlib.sha256(blob).hexdigest() != rec["sha256"]:
        raise FerError(f"the stored file of {model_id!r} does not match its sha256",
                       where="FER_FEEDBACK_DB", status=503)
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=root))
    try:
        (tmp / "model.keras").write_bytes(blob)
        (tmp / "labels.json").write_text(rec["labels"], encoding="utf-8")
        if rec["calibration"]:
            (tmp / "calibration.json").write_text(rec["calibration"], encoding="utf-8")
        if rec["runtime_blob"] is not None:  # runs on LiteRT without TensorFlow
            (tmp / "model.tflite").write_bytes(bytes(rec["runtime_blob"]))
            (tmp / "model.tflite.json").write_text(rec["runtime_record"], encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.keras").is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
