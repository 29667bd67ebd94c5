"""The process-wide training job manager and the live training charts.

``job_manager()`` is one object per server (``st.cache_resource``): every session sees the same
running job, a browser reload re-attaches to it, and a second Start is refused by the manager.
Worker threads never call ``st.*``; pages poll the job from a fragment.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots


@st.cache_resource(show_spinner=False)
def job_manager():
    """The one JobManager of this server (thread-safe; shared by all sessions)."""
    from fer_core.training import JobManager
    return JobManager()


def curves_figure(epochs: list[dict], batches: list[dict] = (), height: int = 340) -> go.Figure:
    """Train vs val loss and accuracy.

    ``epochs``: per-epoch records (epoch, loss, accuracy, val_loss, val_accuracy), x = epoch
    number (1-based). ``batches``: optional per-batch records (epoch 0-based, batch, steps, loss,
    accuracy) drawn as a thin line at fractional epochs so the chart moves within an epoch.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    colors = {"train": "#1f77b4", "val": "#ff7f0e"}
    if batches:
        x = [b["epoch"] + (b["batch"] + 1) / max(b.get("steps") or 1, 1) for b in batches]
        for col, key in ((1, "loss"), (2, "accuracy")):
            fig.add_scatter(x=x, y=[b.get(key) for b in batches], mode="lines", row=1, col=col,
                            name="train (batches)", legendgroup="batches", showlegend=col == 1,
                            line=dict(color=colors["train"], width=1), opacity=0.35)
    ex = [e["epoch"] for e in epochs]
    for col, key in ((1, "loss"), (2, "accuracy")):
        for who, k in (("train", key), ("val", f"val_{key}")):
            fig.add_scatter(x=ex, y=[e.get(k) for e in epochs], mode="lines+markers",
                            row=1, col=col, name=who, legendgroup=who, showlegend=col == 1,
                            line=dict(color=colors[who]))
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=height, margin=dict(t=40, b=10, l=10, r=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
