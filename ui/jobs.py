"""The Train page's view of training jobs: start, follow, stop and resume them.

Jobs run in child processes (:mod:`fer_core.jobs`); this module only reads their files. The
runner's root is the runs directory, so every session, and the app after a restart, finds the
same current job there; a second Start is refused by the runner's lock. A job's events are read
incrementally into a :class:`Feed` shared by all sessions (``st.cache_resource``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st

from fer_core import runs
from fer_core.job_events import Log, Progress
from fer_core.jobs import JobHandle, JobRunner
from fer_core.training import TrainConfig, resume_spec, start_training, train_spec

RESUMABLE = ("stopped", "crashed", "interrupted")


def runner() -> JobRunner:
    """The job runner of the runs directory (its state lives on disk, so any object will do)."""
    return JobRunner(runs.runs_dir())


def current_job() -> JobHandle | None:
    """The running or latest job of the runs directory."""
    return runner().current()


def start_training_job(dataset, choice: dict, config: TrainConfig, run_dir: Path,
                       max_train: int = 0) -> JobHandle:
    """Start training ``config`` on the chosen dataset (its source path: an upload is a file
    too) in a child process. FerError: bad config, or a job already running."""
    spec = train_spec(choice["source"], config, strict=choice.get("strict", True),
                      max_train=max_train, seed=config.seed)
    return start_training(runner(), spec, run_dir, dataset=dataset)


def resume_job(job: JobHandle) -> JobHandle:
    """Continue a stopped, crashed or interrupted run from its last checkpoint."""
    return start_training(runner(), resume_spec(job.spec, job.job_dir), job.job_dir)


class Feed:
    """A job's start event, latest per-batch progress event and per-batch rows, read
    incrementally from its events.jsonl (thread-safe: every session's fragment calls
    :meth:`update`)."""

    def __init__(self, job: JobHandle):
        self.job, self._lock, self._offset = job, threading.Lock(), 0
        self.start: Log | None = None
        self.latest: Progress | None = None
        self.batch_rows: list[dict] = []

    def update(self) -> "Feed":
        with self._lock:
            events, self._offset = self.job.events(self._offset)
            for e in events:
                if isinstance(e, Log) and e.stage == "start":
                    self.start = e
                elif isinstance(e, Progress):
                    self.latest = e
                    self.batch_rows.append({"epoch": e.epoch, "batch": e.done,
                                            "batches": e.total, "loss": e.loss,
                                            "accuracy": e.accuracy})
        return self


@st.cache_resource(show_spinner=False)
def _feeds() -> dict:
    return {}


def _feed(job: JobHandle, started_at) -> Feed:
    """The feed of this start of ``job`` (a resumed run writes its events afresh)."""
    feeds, key = _feeds(), (str(job.job_dir), started_at)
    if key not in feeds:
        for old in [k for k in feeds if k[0] == key[0]]:
            feeds.pop(old, None)
        feeds[key] = Feed(job)
    return feeds[key].update()


def stop_reason(state: dict) -> str:
    """How a job's process ended when it did not report it: the signal or the exit code."""
    if state.get("signal"):
        return f"killed by {state['signal']}"
    if state.get("exit_code") not in (None, 0):
        return f"exit code {state['exit_code']}"
    return "no exit status known"


def snapshot(job: JobHandle | None) -> dict | None:
    """Everything the Train page shows about a training ``job``."""
    if job is None or job.kind != "train":
        return None
    state = job.state()
    feed = _feed(job, state.get("started_at"))
    config = job.spec.get("config") or {}
    history = runs.read_jsonl(job.job_dir / "history.jsonl")
    latest, start, result = feed.latest, feed.start, state.get("result") or {}
    epochs = getattr(latest, "epochs", None) or config.get("epochs") or 1
    batches = getattr(latest, "total", None) or getattr(start, "batches", None) or 1
    epoch = getattr(latest, "epoch", None) or getattr(start, "initial_epoch", 0) + 1
    batch = latest.done if latest is not None else 0
    last = history[-1] if history else {}
    end = state.get("finished_at") or time.time()
    return {
        "job": job, "running": state["status"] == "running", "status": state["status"],
        "result_status": result.get("status"), "error": state.get("error"),
        "signal": state.get("signal"), "exit_code": state.get("exit_code"),
        "reason": stop_reason(state), "log_tail": state.get("log_tail") or [],
        "resumable": state["status"] in RESUMABLE,
        "run_dir": str(job.job_dir), "run_id": job.job_dir.name, "arch": config.get("arch", "?"),
        "epoch": epoch, "epochs": epochs, "batch": batch, "batches": batches,
        "progress": min(1.0, ((epoch - 1) * batches + batch) / max(epochs * batches, 1)),
        "eta": getattr(latest, "eta_sec", None), "images_per_sec": getattr(latest, "rate", None),
        "accuracy": getattr(latest, "accuracy", None),
        "best_val_accuracy": result.get("best_val_accuracy", last.get("best_val_accuracy")),
        "best_epoch": result.get("best_epoch", last.get("best_epoch")),
        "elapsed": end - (state.get("started_at") or end), "history": history,
        "batch_rows": list(feed.batch_rows),
        "has_model": (job.job_dir / runs.MODEL_FILE).exists(),
    }
