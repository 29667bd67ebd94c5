"""Plotly figures and image grids for the Evaluate, Photo, Webcam and Models pages."""

from __future__ import annotations

import streamlit as st


def prob_bars(scores: dict, height: int = 220, title: str | None = None):
    """Horizontal Plotly bars of class probabilities (highest on top)."""
    import plotly.graph_objects as go
    from fer_core.labels import EMOJI

    items = sorted(scores.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items],
                           y=[f"{EMOJI.get(k, '')} {k}" for k, _ in items], orientation="h",
                           text=[f"{v:.0%}" for _, v in items], textposition="auto",
                           marker_color=["#1f77b4"] * (len(items) - 1) + ["#d62728"]))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30 if title else 10, b=10),
                      xaxis=dict(range=[0, 1], tickformat=".0%"), title=title,
                      showlegend=False)
    return fig


def confusion_figure(report: dict, normalized: bool, title: str | None = None):
    """Plotly heatmap of the confusion matrix (rows true, columns predicted) with one
    invisible clickable marker per cell, so a click selects (true, predicted)."""
    import plotly.graph_objects as go

    names = list(report["labels"])
    z = report["confusion_matrix_normalized" if normalized else "confusion_matrix"]
    counts = report["confusion_matrix"]
    text = [[f"{v:.2f}" if normalized else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", text=text,
                               texttemplate="%{text}", hoverinfo="skip",
                               zmin=0, zmax=1 if normalized else None, showscale=False))
    xs = [p for _ in names for p in names]
    ys = [t for t in names for _ in names]
    cd = [counts[i][j] for i in range(len(names)) for j in range(len(names))]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", customdata=cd,
                             marker=dict(symbol="square", size=40, opacity=0),
                             hovertemplate="true %{y}, predicted %{x}: %{customdata} faces"
                                           "<extra></extra>", showlegend=False))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10), title=title,
                      xaxis=dict(title="predicted", side="top"),
                      yaxis=dict(title="true", autorange="reversed"), clickmode="event+select",
                      dragmode=False)
    return fig


def per_class_figure(report: dict):
    """Grouped bars of per-class precision, recall and F1 of an evaluation report."""
    import plotly.graph_objects as go

    per = report["per_class"]
    return go.Figure([go.Bar(name=m, x=list(per), y=[v[m] for v in per.values()])
                      for m in ("precision", "recall", "f1")]).update_layout(
        barmode="group", height=340, yaxis_tickformat=".0%",
        title="Per-class precision, recall and F1")


def true_vs_pred_figure(report: dict):
    """Grouped bars: how many faces of each class there are vs. how many were predicted."""
    import plotly.graph_objects as go

    tvp = report["true_vs_pred"]
    return go.Figure([go.Bar(name=name, x=list(tvp), y=[v[k] for v in tvp.values()])
                      for name, k in (("true", "true"), ("predicted", "pred"))]).update_layout(
        barmode="group", height=320, title="True vs predicted counts per class")


def delta_figure(deltas, title: str):
    """Bars of per-class changes (a pandas Series indexed by class), green up, red down."""
    import plotly.graph_objects as go

    return go.Figure(go.Bar(x=list(deltas.index), y=list(deltas),
                            marker_color=["#2ca02c" if v >= 0 else "#d62728" for v in deltas])
                     ).update_layout(height=300, title=title, yaxis_tickformat="+.0%")


def face_gallery(items: list[dict], columns: int = 8, size: int = 96, key: str = "g") -> None:
    """Faces from fer_core.evaluation.gallery_items in a grid with true/pred captions."""
    import cv2

    if not items:
        st.caption("No faces here.")
        return
    cols = st.columns(columns)
    for k, it in enumerate(items):
        img = cv2.resize(it["image"], (size, size), interpolation=cv2.INTER_NEAREST)
        mark = "✅" if it["correct"] else "❌"
        cols[k % columns].image(img, caption=f"{mark} {it['true']} → {it['pred']} "
                                             f"({it['confidence']:.0%})", width=size)


def history_curves_figure(history: list[dict], keys: tuple[str, ...], title: str):
    """Learning curves (per epoch) of the given history keys that exist."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k in keys:
        ys = [h.get(k) for h in history]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=[h.get("epoch", i + 1) for i, h in enumerate(history)],
                                     y=ys, mode="lines+markers", name=k))
    fig.update_layout(title=title, height=300, xaxis_title="epoch",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig if fig.data else None


def live_figure(history: list[dict], labels, seconds: float = 30.0):
    """Emotion probabilities over time of the face seen most in ``history`` (per-face rows
    from FrameAnnotator.history), one line per emotion; None when there is no face yet."""
    import collections

    import plotly.graph_objects as go

    if not history:
        return None
    face = collections.Counter(r["face"] for r in history).most_common(1)[0][0]
    rows = [r for r in history if r["face"] == face]
    t_end = rows[-1]["timestamp"]
    xs = [r["timestamp"] - t_end for r in rows]
    fig = go.Figure([go.Scatter(x=xs, y=[r[n] for r in rows], mode="lines", name=n)
                     for n in labels])
    fig.update_layout(title=f"Face #{face}: emotion probabilities, last {seconds:.0f} s",
                      height=300, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title="seconds", range=[-seconds, 0]),
                      yaxis=dict(range=[0, 1], tickformat=".0%"))
    return fig


def reliability_figure(report: dict, before: bool = False):
    """Reliability diagram: accuracy per confidence bin against the diagonal, titled with ECE.
    ``before``: the uncalibrated probabilities (``report["uncalibrated"]``)."""
    import plotly.graph_objects as go

    src = report.get("uncalibrated", report) if before else report
    bins = [b for b in src["reliability"] if b["count"]]
    what = "before calibration" if before else (
        f"calibrated, T={report.get('temperature', 1.0):.2f}"
        if report.get("calibrated") else "no calibration")
    fig = go.Figure([go.Bar(x=[(b["lo"] + b["hi"]) / 2 for b in bins],
                            y=[b["accuracy"] for b in bins],
                            width=[b["hi"] - b["lo"] for b in bins],
                            name="accuracy", customdata=[b["count"] for b in bins],
                            hovertemplate="confidence %{x:.2f}: accuracy %{y:.0%} "
                                          "(%{customdata} faces)<extra></extra>"),
                     go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=dict(dash="dash", color="grey"))])
    return fig.update_layout(title=f"Reliability, {what} (ECE {src['ece']:.3f})", height=400,
                             xaxis=dict(title="confidence", range=[0, 1]),
                             yaxis=dict(title="accuracy", range=[0, 1]), showlegend=False)


TRAINING_MAX_POINTS = 1500  # batch points drawn per training chart (the feed keeps them all)


def training_curves_figure(epochs: list[dict], batches: list[dict] = (), height: int = 340):
    """Train vs val loss and accuracy against the epoch.

    ``epochs``: per-epoch rows (epoch 1-based, loss, accuracy, val_loss, val_accuracy).
    ``batches``: optional per-batch rows (epoch 1-based, batch 1-based, batches, loss, accuracy)
    drawn as a thin line at fractional epochs, so the chart moves within an epoch.
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    colors = {"train": "#1f77b4", "val": "#ff7f0e"}
    if batches:
        step = max(1, len(batches) // TRAINING_MAX_POINTS)
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
