"""The Video page's helpers: its video job store, result loading and figures.

Video analysis runs as a ``"video"`` job in a child process, in the one video job store of
:mod:`fer_core.video_jobs` (the REST API uses the same), under ``<runs dir>/videos``: one job at
a time, the 5 newest kept. The page finds the running or latest job from disk, so leaving the
page, reloading or opening another session shows the same job. Nothing here calls ``st.*`` from
another thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from fer_core import DATA_DIR, runs
from fer_core.drawing import emotion_colour
from fer_core.video_jobs import VIDEO_SUFFIXES, VideoJobStore

MAX_POINTS = 4000  # per face in a timeline figure (the CSV keeps every row)
KEEP_JOBS = 5     # video jobs kept on disk (older ones are deleted at the next start)


def store() -> VideoJobStore:
    """The page's video jobs: ``<runs dir>/videos``, one at a time, the 5 newest kept."""
    return VideoJobStore(runs.runs_dir() / "videos", max_jobs=1, keep=KEEP_JOBS)


def current():
    """The running or latest video job (a JobHandle), or None."""
    s = store()
    vid = s.latest()
    return s.handle(vid) if vid is not None else None


def data_videos(folder: Path | None = None) -> list[Path]:
    """Video files in data/ (and one folder level below)."""
    folder = Path(folder or DATA_DIR)
    if not folder.is_dir():
        return []
    found = [p for p in sorted(folder.glob("*")) + sorted(folder.glob("*/*"))
             if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    return found


def start(name: str, *, data: bytes | None = None, path: Path | None = None, model=None,
          every: int = 5, smoothing: float = 0.0, annotate: bool = False,
          detector: str | None = None) -> str:
    """Start a video job on an uploaded file (``data``) or a file on disk (``path``); its id.
    FerError: an unknown detector, not a video, or a job already running."""
    from fer_core import video
    from fer_core.vision import FaceDetector
    FaceDetector(video.detector_config(detector))  # unknown detector / missing package
    return store().submit(name, data=data, path=path, model=model, every=every,
                          smoothing=smoothing, annotate=annotate, detector=detector)


def status(vid: str) -> dict:
    """What the page shows about job ``vid`` (:meth:`VideoJobStore.status`)."""
    return store().status(vid)


def results(job_dir: Path) -> dict | None:
    """summary, the frames table (DataFrame), and the output files of a finished job."""
    job_dir = Path(job_dir)
    sfile = job_dir / "summary.json"
    if not sfile.is_file():
        return None
    summary = json.loads(sfile.read_text())
    df = pd.read_csv(job_dir / "frames.csv")
    annotated = summary.get("outputs", {}).get("annotated")
    return {"summary": summary, "frames": df, "csv": job_dir / "frames.csv", "json": sfile,
            "video": job_dir / annotated if annotated else None}


def timeline_figure(df: pd.DataFrame, face: int, labels, smoothed: bool = False) -> go.Figure:
    """Probabilities of one face over time (a line per emotion) above a band coloured by the
    dominant emotion of each analysed frame."""
    d = df[df["face"] == face]
    if len(d) > MAX_POINTS:
        d = d.iloc[:: int(len(d) // MAX_POINTS) + 1]
    cols = [f"{lb}_smoothed" for lb in labels] if smoothed else list(labels)
    fig = go.Figure()
    for lb, col in zip(labels, cols):
        r, g, b = emotion_colour(lb)[::-1]
        fig.add_trace(go.Scatter(x=d["time_s"], y=d[col], name=lb, mode="lines",
                                 line={"color": f"rgb({r},{g},{b})", "width": 1.6}))
    emo = d["emotion_smoothed"] if smoothed else d["emotion"]
    for lb in labels:
        m = emo == lb
        if not m.any():
            continue
        r, g, b = emotion_colour(lb)[::-1]
        fig.add_trace(go.Bar(x=d["time_s"][m], y=[0.08] * int(m.sum()), base=1.04,
                             marker={"color": f"rgb({r},{g},{b})", "line": {"width": 0}},
                             name=f"{lb} (dominant)", showlegend=False, hovertemplate=lb))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title=f"Face #{face}", bargap=0, xaxis_title="time (s)",
                      yaxis={"range": [0, 1.14], "title": "probability"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def share_figure(summary: dict) -> go.Figure:
    """Per face, the share of its time spent in each dominant emotion (stacked bars)."""
    labels = summary["processing"]["labels"]
    faces = summary["faces"]
    fig = go.Figure()
    for lb in labels:
        r, g, b = emotion_colour(lb)[::-1]
        fig.add_trace(go.Bar(y=[f"#{f['id']}" for f in faces],
                             x=[f["share"].get(lb, 0.0) for f in faces], name=lb,
                             orientation="h", marker={"color": f"rgb({r},{g},{b})"}))
    fig.update_layout(barmode="stack", height=120 + 40 * len(faces),
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Share of time",
                      xaxis={"tickformat": ".0%", "range": [0, 1]})
    return fig
