"""The Video page's helpers: the video job (start, state, stop), result loading and figures.

Video analysis runs as a ``"video"`` job of :mod:`fer_core.jobs` in a child process, in a job
directory under ``<runs dir>/videos``; the page finds the running or latest job from disk
(``JobRunner.current()``), so leaving the page, reloading or opening another session shows the
same job. Nothing here calls ``st.*`` from another thread.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from fer_core import DATA_DIR, jobs, runs
from fer_core.drawing import emotion_colour

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
MAX_POINTS = 4000  # per face in a timeline figure (the CSV keeps every row)
KEEP_JOBS = 5     # finished video jobs kept on disk (older ones are deleted at the next start)


def jobs_root() -> Path:
    return runs.runs_dir() / "videos"


def runner():
    root = jobs_root()
    root.mkdir(parents=True, exist_ok=True)
    return jobs.JobRunner(root)


def current():
    """The running or latest video job (a JobHandle), or None."""
    return runner().current()


def data_videos(folder: Path | None = None) -> list[Path]:
    """Video files in data/ (and one folder level below)."""
    folder = Path(folder or DATA_DIR)
    if not folder.is_dir():
        return []
    found = [p for p in sorted(folder.glob("*")) + sorted(folder.glob("*/*"))
             if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    return found


def prune(keep: int = KEEP_JOBS) -> None:
    """Delete all but the ``keep`` newest video job folders (uploads and results)."""
    import shutil
    root = jobs_root()
    if not root.is_dir():
        return
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and (d / "job.json").exists()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def start(name: str, *, data: bytes | None = None, path: Path | None = None, model=None,
          every: int = 5, smoothing: float = 0.0, annotate: bool = False,
          detector: str | None = None):
    """Start a video job on an uploaded file (``data``) or a file on disk (``path``)."""
    from fer_core import video
    prune(KEEP_JOBS - 1)
    job_dir = jobs_root() / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while job_dir.exists():
        job_dir = jobs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    job_dir.mkdir(parents=True)
    if data is not None:
        src = job_dir / ("input" + (Path(name).suffix.lower() or ".bin"))
        src.write_bytes(data)
    else:
        src = Path(path)
    try:
        from fer_core.vision import FaceDetector
        FaceDetector(video.detector_config(detector))  # unknown detector / missing package
        video.probe(src, name=name)  # not a video / no frames / codec: say so now
        return runner().start("video", {"input": str(src), "out_dir": str(job_dir),
                                        "name": name, "model": str(model) if model else None,
                                        "every": int(every), "smoothing": float(smoothing),
                                        "detector": detector,
                                        "annotate": bool(annotate)}, job_dir)
    except BaseException:
        import shutil
        shutil.rmtree(job_dir, ignore_errors=True)
        raise


def status(handle) -> dict:
    """What the page shows about a job: status, progress fraction, frames, fps, ETA, error."""
    state = handle.state()
    events, _ = handle.events(0)
    last = next((e for e in reversed(events) if e.get("type") == "progress"), {})
    done, total = int(last.get("done") or 0), last.get("total")
    spec = {}
    try:
        spec = json.loads((Path(handle.job_dir) / "job.json").read_text()).get("spec", {})
    except (OSError, ValueError):
        pass
    return {"status": state.get("status", "running"), "running": handle.running,
            "done": done, "total": total,
            "fraction": min(1.0, done / total) if total else 0.0,
            "fps": last.get("fps"), "eta": last.get("eta_sec"),
            "error": state.get("error"), "signal": state.get("signal"),
            "log_tail": state.get("log_tail"), "name": spec.get("name") or "video",
            "job_dir": Path(handle.job_dir)}


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
