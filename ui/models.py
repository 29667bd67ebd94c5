"""Model choice and shared model objects for the Photo, Webcam, Evaluate and Models pages.

- :func:`model_choices` / :func:`model_picker`: the shipped default (or ``FER_MODEL``) plus every
  run in ``fer_core.runs.runs_dir()``; the picked path is kept in
  ``st.session_state["active_model"]``.
- :func:`get_model`: the :class:`fer_core.model.FerModel` (loaded once per file and mtime by
  ``FerModel.load``; this adds the "Loading model…" spinner). :func:`get_predictor`: a
  :class:`fer_core.predict.Predictor` of it with the page's detector settings.
- :func:`detector_picker` / :func:`detector_settings`: the face-detector select box (default
  ``FER_DETECTOR``, else BlazeFace) and settings, defaulting to one
  ``fer_core.vision.DetectorConfig`` preset of that detector.
- :func:`evaluate_cached`: evaluation reports shared by all sessions, with a progress bar.
- :func:`ice_servers`: WebRTC ICE servers from ``FER_ICE_SERVERS`` (default none).

Figures live in :mod:`ui.figures`; photo analysis in :mod:`fer_core.photo`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from fer_core import resolve, runs
from fer_core.errors import FerError
from fer_core.job_events import Log, Metric
from fer_core.settings import get_settings

ACTIVE_MODEL = "active_model"
NO_MODEL_MSG = ("No default model yet — train one on the Train page or pick a run "
                "(runs are listed from {runs}).")


def ice_servers() -> list[dict]:
    """ICE servers for WebRTC: ``FER_ICE_SERVERS`` as a JSON list, else none.

    With no server a local browser connects at once; an unreachable STUN server would make
    connecting wait for its timeout. Raises FerError when the variable is not a JSON list of
    objects (checked by :mod:`fer_core.settings`).
    """
    return get_settings().ice_servers


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: Path
    kind: str  # "env" | "shipped" | "run"


def model_stamp(path) -> tuple:
    """Sizes and mtimes of the model file, its labels and its calibration: part of every
    cache key, so a retrained or recalibrated model is picked up."""
    from fer_core.model_files import stamp
    return stamp(path)


def _list_runs() -> list:
    try:
        return list(runs.list_runs())
    except FerError:
        return []


def _run_label(run) -> str:
    name = Path(run.path).name
    metrics = getattr(run, "metrics", None) or {}
    acc = metrics.get("val_accuracy", metrics.get("accuracy"))
    arch = (getattr(run, "config", None) or {}).get("arch")
    bits = [b for b in (arch, f"acc {acc:.1%}" if isinstance(acc, (int, float)) else None) if b]
    return f"Run: {name}" + (f" ({', '.join(bits)})" if bits else "")


def model_choices() -> list[ModelChoice]:
    """``FER_MODEL`` (when set), the shipped default (when present), then every run."""
    out: list[ModelChoice] = []
    seen: set[str] = set()

    def add(label, path, kind):
        key = str(Path(path).resolve())
        if key not in seen and runs.has_model(path):
            seen.add(key)
            out.append(ModelChoice(label, Path(path), kind))

    settings = get_settings()
    if settings.model:  # a wrong one is left out (model_picker says why)
        configured = resolve.configured_model(settings)
        if configured is not None:
            add(f"FER_MODEL: {configured.name}", configured, "env")
    add(f"Shipped: {resolve.DEFAULT_MODEL.name}", resolve.DEFAULT_MODEL, "shipped")
    for run in _list_runs():
        add(_run_label(run), Path(run.path), "run")
    return out


def no_model_message() -> str:
    return NO_MODEL_MSG.format(runs=runs.runs_dir())


def model_picker(label: str = "Model", key: str = "model_pick", exclude=None,
                 remember: bool = True, container=None) -> Path | None:
    """A selectbox of :func:`model_choices`; returns the chosen path or None (after st.info).

    The default is the session's active model, else ``FER_MODEL``, else the shipped one.
    """
    where = container or st
    if get_settings().model:
        try:
            resolve.resolve_model(None)
        except FerError as e:
            from ui.text import md
            where.warning(f"FER_MODEL is not used: {md(e)}")
    choices = [c for c in model_choices()
               if exclude is None or str(c.path.resolve()) != str(Path(exclude).resolve())]
    if not choices:
        where.info(no_model_message())
        return None
    active = st.session_state.get(ACTIVE_MODEL)
    index = next((i for i, c in enumerate(choices) if active and str(c.path) == active), 0)
    pick = where.selectbox(label, range(len(choices)), index=index, key=key,
                           format_func=lambda i: choices[i].label)
    chosen = choices[pick if pick is not None and pick < len(choices) else 0]
    if remember:
        st.session_state[ACTIVE_MODEL] = str(chosen.path)
    return chosen.path


DETECTOR_LABELS = {"blazeface": "BlazeFace (CNN, default)",
                   "blazeface-short": "BlazeFace short range (CNN, faces within 2 m)",
                   "haar": "Haar cascade (2001, fastest)"}


def default_detector() -> str:
    """The app's default face detector: ``FER_DETECTOR`` when set, else the core's."""
    from fer_core.vision import default_detector
    return get_settings().detector or default_detector()


def detector_picker(key: str, container=None) -> str:
    """The "Face detector" select box (default :func:`default_detector`); returns the name."""
    from fer_core.detectors import DETECTORS
    names = list(DETECTORS)
    where = container or st
    return where.selectbox("Face detector", names, index=names.index(default_detector()),
                           key=f"{key}_kind", format_func=lambda n: DETECTOR_LABELS.get(n, n),
                           help="BlazeFace finds turned, tilted and partly hidden faces and "
                                "gives eye positions (faces are then rotated level); Haar is "
                                "the 2001 cascade (see README: Face detectors).")


def detector_settings(key: str = "det", container=None, preset: str = "photo") -> dict:
    """The face-detector select box and settings whose defaults are the
    ``fer_core.vision.DetectorConfig.preset(preset, detector)``: "photo" for photos, "realtime"
    for the webcam (the preset ``bench predict`` measures). Returns keyword settings for
    ``DetectorConfig``."""
    from fer_core.vision import DetectorConfig

    where = container or st
    kind = detector_picker(key, where)
    base = DetectorConfig.preset(preset, kind)
    out = base.to_dict()
    with where.expander("Face detector settings"):
        if kind == "haar":
            out["scale_factor"] = float(st.slider(
                "Scale factor", 1.05, 1.5, float(base.scale_factor), 0.05, key=f"{key}_scale",
                help="Step between detection scales: smaller finds more faces, slower."))
            out["min_neighbors"] = int(st.slider(
                "Min neighbours", 1, 10, int(base.min_neighbors), key=f"{key}_nb",
                help="Detections needed to keep a face: higher means fewer false faces."))
        out["min_size"] = int(st.slider("Min face size (px)", 20, 200, int(base.min_size), 10,
                                        key=f"{key}_min",
                                        help="Faces smaller than this are ignored."))
    return out


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def _model(path: str, stamp: tuple):
    from fer_core.model import FerModel
    return FerModel.load(path)


def get_model(path):
    """The shared :class:`fer_core.model.FerModel` for ``path`` (FerError on a bad file)."""
    return _model(str(path), model_stamp(path))


def get_predictor(path, settings: dict | None = None):
    """A Predictor of the shared model for ``path`` with detector ``settings``; FerError for
    an unknown detector or one whose package is missing (the message names it)."""
    from fer_core.predict import Predictor
    from fer_core.vision import DetectorConfig
    predictor = Predictor(get_model(path), DetectorConfig(**(settings or {})))
    predictor.detector  # noqa: B018 - load the detector now: a missing package is a FerError
    return predictor


# ------------------------------------------------------------------------------------------
# Evaluation reports (per model file + mtime, dataset, split and TTA), shared by all sessions
# ------------------------------------------------------------------------------------------

_EVAL_ENTRIES = 8


@st.cache_resource
def _reports() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def dataset_key(ds) -> tuple:
    return (str(ds.source), len(ds), ds.label_set, tuple(ds.splits))


def evaluate_cached(path, ds, split: str, tta: bool = False, progress: bool = True):
    """(report, Predictions) of ``fer_core.evaluation.evaluate``, computed once per key and
    kept for every session; a progress bar shows while it runs. FerError on a mismatch."""
    from fer_core import evaluation

    key = (str(path), model_stamp(path), dataset_key(ds), split, bool(tta))
    store, lock = _reports()
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    model = get_model(path)
    bar = st.progress(0.0, text="Evaluating…") if progress else None

    def step(done, total):
        bar.progress(min(1.0, done / total), text=f"Evaluating: {done:,} of {total:,} faces")
    try:
        result = evaluation.evaluate(model, ds, split=split, tta=tta, return_predictions=True,
                                     progress=step if bar is not None else None)
    finally:
        if bar is not None:
            bar.empty()
    with lock:
        store[key] = result
        while len(store) > _EVAL_ENTRIES:
            store.popitem(last=False)
    return result


# ------------------------------------------------------------------------------------------
# Run details for the Models page
# ------------------------------------------------------------------------------------------

def model_figures(path) -> dict:
    """The validation figures a run's metrics.json reports (its model card's): ``accuracy``,
    ``macro_f1``, ``n``, ``label_set``, ``data_source``, ``synthetic``; {} when it has none."""
    try:
        m = runs.load_run(Path(path) if Path(path).is_dir() else Path(path).parent).metrics
    except FerError:
        return {}
    rep = m.get("val_report") or {}
    data = m.get("data") or {}
    acc = rep.get("accuracy", m.get("best_val_accuracy"))
    if not isinstance(acc, (int, float)):
        return {}
    return {"accuracy": float(acc), "macro_f1": float(rep.get("macro_f1") or 0.0),
            "n": int(rep.get("n") or data.get("n_val") or 0), "label_set": m.get("label_set"),
            "data_source": str(data.get("source") or ""), "synthetic": bool(data.get("synthetic"))}


def demo_note(path) -> str | None:
    """Why a model trained on real faces scores low on the drawn demo faces, its model-card
    figures and how to load FER2013 (Markdown); None for a model without such figures."""
    card = model_figures(path)
    if card.get("accuracy") is None or card.get("synthetic"):
        return None
    fer = card.get("label_set") == "fer7" and "fer2013" in card.get("data_source", "").lower()
    return (f"**Synthetic demo data: drawn faces, not real people.** This model was trained on "
            f"real faces{' (FER2013)' if fer else ''}, so the figures below say how far "
            "drawings are from its training data, not how good it is. Its model card reports "
            f"**{card['accuracy']:.1%} accuracy** and macro-F1 {card['macro_f1']:.3f} on "
            f"{card['n']:,} real validation faces{' (FER2013 PublicTest)' if fer else ''}. "
            "To measure it on real faces, download FER2013 (Kaggle: *Challenges in "
            "Representation Learning: Facial Expression Recognition Challenge*, `fer2013.csv`), "
            "put it in `data/` or upload it in the Dataset Explorer, or start the app with "
            "`FER_DATA=/path/to/fer2013.csv`; then pick it here.")


def run_details(path) -> dict:
    """card (markdown or None), metrics, config, history (list of per-epoch dicts), labels."""
    run = runs.load_run(Path(path))
    return {"card": run.card or None, "metrics": run.metrics, "config": run.config,
            "history": run.history, "labels": run.labels}


# ---- the model lifecycle: fine-tune from feedback, compare, promote, roll back ---------------

def lifecycle_settings():
    """The API settings (``FER_FEEDBACK_DB``, ``FER_API_KEY``, ``FER_MODEL``, replay mix)."""
    from fer_core.api.settings import Settings
    return Settings.from_env()


@st.cache_resource(show_spinner=False)
def _store(location: str):
    from fer_core.api.feedback_store import FeedbackStore
    return FeedbackStore(location)


def lifecycle_store():
    """The feedback store named by ``FER_FEEDBACK_DB`` (one per location, shared)."""
    return _store(str(lifecycle_settings().feedback_db))


def check_key(given: str | None) -> None:
    """FerError unless ``FER_API_KEY`` is unset or ``given`` matches it."""
    import secrets
    key = lifecycle_settings().api_key
    if key is not None and not secrets.compare_digest((given or "").encode(), key.encode()):
        raise FerError("promotion and rollback need the API key (FER_API_KEY is set)",
                       where="API key")


def lifecycle_status() -> dict:
    """Active model and history from the store (FerError when it is unreachable)."""
    from fer_core import promotion
    return promotion.status(lifecycle_store())


def promote_run(path, key: str | None) -> dict:
    from fer_core import promotion
    check_key(key)
    return promotion.promote(lifecycle_store(), path, who=f"app {promotion.who_default()}",
                             configured_model=resolve.configured_model(lifecycle_settings()))


def rollback_active(key: str | None) -> dict:
    from fer_core import promotion
    check_key(key)
    return promotion.rollback(lifecycle_store(), who=f"app {promotion.who_default()}")


def history_rows(status: dict) -> list[dict]:
    import time as _time
    return [{"when": _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(h["at"])),
             "action": h["action"], "model": h["model_id"] or "FER_MODEL (configured)",
             "previous": h["previous_model_id"] or "FER_MODEL (configured)", "who": h["who"],
             "run": Path(h["run"]).name if h["run"] else "", "comparison": h["verdict"] or "",
             "warning": h["warning"] or ""} for h in status["history"]]


def default_replay(path) -> str:
    from fer_core import finetune
    try:
        return finetune.replay_source(path)
    except FerError:
        return "demo"


def start_finetune(base, *, data: str, mode: str, epochs: int, replay: float, holdout: float):
    """Start a "finetune" job on the store's feedback in a new run; returns its handle."""
    from fer_core import finetune
    from ui.jobs import runner
    settings = lifecycle_settings()
    base = resolve.resolve_model(base, settings)
    spec = finetune.finetune_spec(base, settings.feedback_db, data=data, replay=replay,
                                  holdout=holdout, mode=mode, epochs=epochs,
                                  command="Models page")
    from fer_core.model import FerModel
    faces, labels, _ = finetune.load_feedback(settings.feedback_db)
    if not labels:
        raise FerError("there is no feedback to fine-tune on; corrections arrive through the "
                       "API (POST /v1/feedback)", where="feedback store")
    finetune.feedback_labels(labels, FerModel.load(base).labels)
    finetune.base_recipe(base)
    return runner().start("finetune", spec, runs.runs_dir() / runs.new_run_id("finetune"))


def resume_finetune(job):
    from fer_core import finetune
    from ui.jobs import runner
    return runner().start("finetune", finetune.resume_spec(job.spec), job.job_dir)


def finetune_job():
    """The runs folder's current job when it is a fine-tuning job, else None."""
    from ui.jobs import current_job
    job = current_job()
    return job if job is not None and job.kind == "finetune" else None


def finetune_progress(job) -> dict:
    """status, epoch/epochs, stage, val accuracy, error and log tail of a fine-tuning job."""
    state = job.state()
    events, _ = job.events(0)
    epoch = next((e for e in reversed(events) if isinstance(e, Metric)), None)
    stage = next((e.stage for e in reversed(events)
                  if isinstance(e, Log) and e.topic == "finetune"), None)
    epochs = int(job.spec.get("epochs") or 1)
    done = epoch.epoch if epoch is not None else 0
    return {"status": state["status"], "run": job.job_dir.name, "run_dir": job.job_dir,
            "epoch": done, "epochs": epochs, "stage": stage,
            "progress": min(1.0, done / epochs) if state["status"] == "running" else 1.0,
            "val_accuracy": getattr(epoch, "val_accuracy", None), "error": state.get("error"),
            "log_tail": state.get("log_tail") or [], "result": state.get("result") or {}}


def comparison_frames(result: dict):
    """(per-set table, per-class table) of a comparison record, as DataFrames."""
    import pandas as pd

    def iv(d):
        return f"[{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]"
    sets = [{"faces": s["title"], "n": s["n"], "current": s["accuracy"]["current"],
             "candidate": s["accuracy"]["candidate"],
             "difference (points)": s["accuracy"]["delta"] * 100,
             "95% interval (points)": iv(s["accuracy"]), "ECE current": s["ece"]["current"],
             "ECE candidate": s["ece"]["candidate"]} for s in result["sets"].values()]
    focus = result.get("focus") or []
    classes = []
    for s in result["sets"].values():
        for label, d in sorted(s["per_class"].items(), key=lambda kv: kv[0] not in focus):
            classes.append({"faces": s["title"], "class": label, "n": d["n"],
                            "current": d["current"], "candidate": d["candidate"],
                            "difference (points)": d["delta"] * 100,
                            "95% interval (points)": iv(d)})
    return pd.DataFrame(sets), pd.DataFrame(classes)
