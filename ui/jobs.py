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

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from fer_core import runs
from fer_core.jobs import JobHandle, JobRunner
from fer_core.training import TrainConfig, resume_spec, start_training, train_spec

MAX_POINTS = 1500  # batch points drawn per chart (the feed keeps them all)
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
    """A job's start event, latest batch event and per-batch rows, read incrementally from its
    events.jsonl (thread-safe: every session's fragment calls :meth:`update`)."""

    def __init__(self, job: JobHandle):
        self.job, self._lock, self._offset = job, threading.Lock(), 0
        self.start: dict = {}
        self.latest: dict = {}
        self.batch_rows: list[dict] = []

    def update(self) -> "Feed":
        with self._lock:
            events, self._offset = self.job.events(self._offset)
            for e in events:
                if e.get("type") == "start":
                    self.start = e
                elif e.get("type") == "batch":
                    self.latest = e
                    self.batch_rows.append({k: e.get(k) for k in
                                            ("epoch", "batch", "batches", "loss", "accuracy")})
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
    epochs = latest.get("epochs") or config.get("epochs") or 1
    batches = latest.get("batches") or start.get("batches") or 1
    epoch = latest.get("epoch") or start.get("initial_epoch", 0) + 1
    batch = latest.get("batch", 0)
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
        "eta": latest.get("eta_sec"), "images_per_sec": latest.get("images_per_sec"),
        "accuracy": latest.get("accuracy"),
        "best_val_accuracy": result.get("best_val_accuracy", last.get("best_val_accuracy")),
        "best_epoch": result.get("best_epoch", last.get("best_epoch")),
        "elapsed": end - (state.get("started_at") or end), "history": history,
        "batch_rows": list(feed.batch_rows),
        "has_model": (job.job_dir / runs.MODEL_FILE).exists(),
    }


def curves_figure(epochs: list[dict], batches: list[dict] = (), height: int = 340) -> go.Figure:
    """Train vs val loss and accuracy against the epoch.

    ``epochs``: per-epoch rows (epoch 1-based, loss, accuracy, val_loss, val_accuracy).
    ``batches``: optional per-batch rows (epoch 1-based, batch 1-based, batches, loss, accuracy)
    drawn as a thin line at fractional epochs, so the chart moves within an epoch.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    colors = {"train": "#1f77b4", "val": "#ff7f0e"}
    if batches:
        step = max(1, len(batches) // MAX_POINTS)
        rows = list(batches)[::step]
        x = [r["epoch"] - 1 + r["batch"] / max(r["batches"] or 1, 1) for r in rows]
        for col, key in ((1, "loss"), (2, "accuracy")):
            fig.add_scatter(x=x, y=[r[key] for r in rows], mode="lines", row=1, col=col,
                            name="train (per batch)", legendgroup="batches",
                            showlegend=col == 1, opacity=0.45,
                            line=dict(color=colors["train"], width=1))
    ex = [e["epoch"] for e in epochs]
    for col, key in ((1, "loss"), (2, "accuracy")):
        for who, k in (("train", key), ("val", f"val_{key}")):
            fig.add_scatter(x=ex, y=[e.get(k) for e in epochs], mode="lines+markers",
                            row=1, col=col, name=f"{who} (epoch)", legendgroup=who,
                            showlegend=col == 1, line=dict(color=colors[who]))
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    fig.update_layout(height=height, margin=dict(t=40, b=10, l=10, r=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def fmt_seconds(s: float | None) -> str:
    """1:05 / 1:02:03 (– when unknown)."""
    if s is None:
        return "–"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"
