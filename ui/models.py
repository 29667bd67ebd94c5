"""Model choice shared by the Photo, Webcam, Evaluate and Models pages.

- :func:`model_choices` / :func:`model_picker`: the shipped default (or ``FER_MODEL``) plus every
  run in ``fer_core.runs.runs_dir()``; the picked path is kept in
  ``st.session_state["active_model"]``.
- :func:`get_predictor`: one :class:`fer_core.predict.Predictor` per (model file, mtime, detector
  settings), shared by all sessions through ``st.cache_resource`` (Predictor is thread-safe).
- :func:`detector_settings`: the face-detector widgets.
- :func:`ice_servers`: WebRTC ICE servers from ``FER_ICE_SERVERS`` (default none).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import fer_core
from fer_core import runs
from fer_core.errors import FerError

ACTIVE_MODEL = "active_model"
NO_MODEL_MSG = ("No default model yet — train one on the Train page or pick a run "
                "(runs are listed from {runs}).")


def ice_servers() -> list[dict]:
    """ICE servers for WebRTC: ``FER_ICE_SERVERS`` as a JSON list, else none.

    With no server a local browser connects at once; an unreachable STUN server would make
    connecting wait for ~40 s. Raises FerError when the variable is not a JSON list of objects.
    """
    raw = os.environ.get("FER_ICE_SERVERS", "").strip()
    if not raw:
        return []
    try:
        servers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FerError(f"not valid JSON ({exc.msg} at char {exc.pos}); expected a list like "
                       '[{"urls": ["stun:stun.example.org:3478"]}]', where="FER_ICE_SERVERS")
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s
                                                for s in servers):
        raise FerError('expected a JSON list of objects with "urls"', where="FER_ICE_SERVERS")
    return servers


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: Path
    kind: str  # "env" | "shipped" | "run"


def _model_file(path: Path) -> Path:
    path = Path(path)
    return path / "model.keras" if path.is_dir() else path


def model_stamp(path) -> float:
    """Modification time of the model file (0 when missing): part of every cache key."""
    try:
        return _model_file(Path(path)).stat().st_mtime
    except OSError:
        return 0.0


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

    if os.environ.get("FER_MODEL", "").strip():
        add(f"FER_MODEL: {runs.default_model().name}", runs.default_model(), "env")
    add(f"Shipped: {fer_core.DEFAULT_MODEL.name}", fer_core.DEFAULT_MODEL, "shipped")
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


def detector_settings(key: str = "det", container=None, realtime: bool = False) -> dict:
    """Face-detector widgets (OpenCV Haar cascade): keyword settings for
    ``fer_core.vision.DetectorConfig``. ``realtime`` (webcam): detect on a <= 320 px copy and
    default to larger faces (an arm's length away)."""
    where = container or st
    with where.expander("Face detector settings"):
        scale = st.slider("Scale factor", 1.05, 1.5, 1.1, 0.05, key=f"{key}_scale",
                          help="Step between detection scales: smaller finds more faces, slower.")
        neighbours = st.slider("Min neighbours", 1, 10, 5, key=f"{key}_nb",
                               help="Detections needed to keep a face: higher means fewer "
                                    "false faces.")
        min_size = st.slider("Min face size (px)", 20, 200, 60 if realtime else 30, 10,
                             key=f"{key}_min", help="Faces smaller than this are ignored.")
    out = {"scale_factor": float(scale), "min_neighbors": int(neighbours),
           "min_size": int(min_size)}
    if realtime:
        out["max_side"] = 320
    return out


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def _predictor(path: str, stamp: float, settings: tuple):
    from fer_core.predict import Predictor
    from fer_core.vision import DetectorConfig
    return Predictor(path, DetectorConfig(**dict(settings)))


def get_predictor(path, settings: dict | None = None):
    """The shared Predictor for ``path`` and detector ``settings`` (FerError on a bad model)."""
    return _predictor(str(path), model_stamp(path), tuple(sorted((settings or {}).items())))


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _keras_model(path: str, stamp: float):
    return runs.load_model(path)


def get_model(path):
    """The shared Keras model for ``path`` (cached per file and mtime; FerError on a bad file)."""
    return _keras_model(str(path), model_stamp(path))


# ------------------------------------------------------------------------------------------
# Evaluation (cached per model file + mtime, dataset source + size + split + tta)
# ------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _loaded(path: str, stamp: float):
    from fer_core import evaluation
    return evaluation.load(path)


def get_loaded(path):
    """fer_core.evaluation.LoadedModel (model + labels) shared per model file and mtime."""
    return _loaded(str(path), model_stamp(path))


def dataset_key(ds) -> tuple:
    return (str(ds.source), len(ds), ds.label_set, tuple(ds.splits))


@st.cache_data(show_spinner="Evaluating…", max_entries=8)
def _evaluate(path: str, stamp: float, data_key: tuple, split: str, tta: bool, _ds):
    from fer_core import evaluation
    return evaluation.evaluate(get_loaded(path), _ds, split=split, tta=tta,
                               return_predictions=True)


def evaluate_cached(path, ds, split: str, tta: bool = False):
    """(report, Predictions) of fer_core.evaluation.evaluate, cached; FerError on mismatch."""
    return _evaluate(str(path), model_stamp(path), dataset_key(ds), split, bool(tta), ds)


# ------------------------------------------------------------------------------------------
# Figures and small display helpers
# ------------------------------------------------------------------------------------------

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


def reliability_figure(report: dict):
    """Reliability diagram: accuracy per confidence bin against the diagonal, titled with ECE."""
    import plotly.graph_objects as go

    bins = [b for b in report["reliability"] if b["count"]]
    fig = go.Figure([go.Bar(x=[(b["lo"] + b["hi"]) / 2 for b in bins],
                            y=[b["accuracy"] for b in bins],
                            width=[b["hi"] - b["lo"] for b in bins],
                            name="accuracy", customdata=[b["count"] for b in bins],
                            hovertemplate="confidence %{x:.2f}: accuracy %{y:.0%} "
                                          "(%{customdata} faces)<extra></extra>"),
                     go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line=dict(dash="dash", color="grey"))])
    return fig.update_layout(title=f"Reliability diagram (ECE {report['ece']:.3f})", height=400,
                             xaxis=dict(title="confidence", range=[0, 1]),
                             yaxis=dict(title="accuracy", range=[0, 1]))


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


# ------------------------------------------------------------------------------------------
# Run details for the Models page
# ------------------------------------------------------------------------------------------

def run_details(path) -> dict:
    """card (markdown or None), metrics, config, history (list of per-epoch dicts), labels."""
    run = runs.load_run(Path(path))
    return {"card": run.card or None, "metrics": run.metrics, "config": run.config,
            "history": run.history, "labels": run.labels}


def curves_figure(history: list[dict], keys: tuple[str, ...], title: str):
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


# ------------------------------------------------------------------------------------------
# Photo page
# ------------------------------------------------------------------------------------------

MAX_PHOTO_MB = 20
MAX_PHOTO_PIXELS = 40_000_000


@dataclass
class PhotoResult:
    name: str
    annotated: object          # BGR uint8 array
    faces: list                # fer_core.predict.FacePrediction

    def png(self) -> bytes:
        import cv2
        ok, buf = cv2.imencode(".png", self.annotated)
        if not ok:
            raise FerError("could not encode the annotated image", where=self.name)
        return buf.tobytes()


def analyse_photo(name: str, data: bytes, predictor, mode: str = "box",
                  tta: bool = False) -> PhotoResult:
    """Decode (size-checked), detect, classify and annotate one uploaded photo (``tta``: each
    face averaged with its mirror image).

    Raises FerError for a file above MAX_PHOTO_MB / MAX_PHOTO_PIXELS or anything not an image.
    """
    from fer_core import vision
    from fer_core.predict import annotate

    if len(data) > MAX_PHOTO_MB * 2**20:
        raise FerError(f"file is {len(data) / 2**20:.1f} MB; photos up to {MAX_PHOTO_MB} MB "
                       "are accepted", where=name)
    image = vision.decode_image(data, max_pixels=MAX_PHOTO_PIXELS, name=name)
    faces = predictor.predict_image(image, tta=tta)
    return PhotoResult(name, annotate(image, faces, mode=mode), faces)


def photo_rows(results: list[PhotoResult]) -> list[dict]:
    """One row per face: image, face, box, emotion, confidence, one column per class."""
    rows = []
    for r in results:
        for i, f in enumerate(r.faces, 1):
            x, y, w, h = f.box
            rows.append({"image": r.name, "face": i, "x": x, "y": y, "w": w, "h": h,
                         "emotion": f.emotion, "confidence": round(f.confidence, 4),
                         **{k: round(v, 4) for k, v in f.scores.items()}})
    return rows


# ------------------------------------------------------------------------------------------
# Webcam page
# ------------------------------------------------------------------------------------------

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
