"""The process-wide training job manager, a per-job batch log, and the live training charts.

``job_manager()`` is one object per server (``st.cache_resource`` around
``fer_core.training.job_manager()``): every session sees the same running job, a browser reload
re-attaches to it, and a second Start is refused by the manager. Worker threads never call
``st.*``: they only append to thread-safe logs that the page reads from a fragment.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from fer_core import training

MAX_POINTS = 1500  # batch points drawn per chart (the log keeps them all)


@st.cache_resource(show_spinner=False)
def job_manager() -> training.JobManager:
    """The one JobManager of this process (thread-safe; shared by all sessions)."""
    return training.job_manager()


class BatchLog:
    """Thread-safe record of a job's per-batch events (a training callback sink)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: list[dict] = []

    def __call__(self, event: dict) -> None:
        if event.get("type") == "batch":
            row = {k: event.get(k) for k in ("epoch", "batch", "batches", "loss", "accuracy")}
            with self._lock:
                self._rows.append(row)

    def rows(self) -> list[dict]:
        with self._lock:
            return list(self._rows)


@st.cache_resource(show_spinner=False)
def _batch_logs() -> dict[str, BatchLog]:
    return {}


def start_job(dataset, config: training.TrainConfig, run_dir: Path) -> training.TrainingJob:
    """Start a job on the shared manager (FerError: bad config, or a job already running)."""
    log = BatchLog()
    job = job_manager().start(dataset, config, run_dir, callbacks=[log])
    _batch_logs()[str(run_dir)] = log
    return job


def snapshot(job: training.TrainingJob | None) -> dict | None:
    """Everything the Train page shows about ``job``, read once under the job's lock."""
    if job is None:
        return None
    s = job.snapshot()
    latest, start, result = s["latest"] or {}, s["start"] or {}, s["result"] or {}
    history = s["history"]
    epochs, batches = s["config"]["epochs"], latest.get("batches") or start.get("batches") or 1
    epoch, batch = latest.get("epoch") or start.get("initial_epoch", 0) + 1, latest.get("batch", 0)
    last = history[-1] if history else {}
    log = _batch_logs().get(s["run_dir"])
    end = s["finished_at"] or time.time()
    return {
        "running": job.running, "status": s["status"], "error": s["error"],
        "run_dir": s["run_dir"], "run_id": Path(s["run_dir"]).name, "arch": s["config"]["arch"],
        "epoch": epoch, "epochs": epochs, "batch": batch, "batches": batches,
        "progress": min(1.0, ((epoch - 1) * batches + batch) / max(epochs * batches, 1)),
        "eta": latest.get("eta_sec"), "images_per_sec": latest.get("images_per_sec"),
        "accuracy": latest.get("accuracy"),
        "best_val_accuracy": result.get("best_val_accuracy", last.get("best_val_accuracy")),
        "best_epoch": result.get("best_epoch", last.get("best_epoch")),
        "elapsed": end - (s["started_at"] or end), "history": history,
        "batch_rows": log.rows() if log else [], "has_model": result.get("has_model", False),
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
