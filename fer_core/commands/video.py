"""``python -m fer_core video INPUT --out DIR [--model M] [--every N] [--annotate] [--json]``.

Writes ``DIR/frames.csv`` (one row per face per analysed frame), ``DIR/summary.json`` and, with
``--annotate``, ``DIR/annotated.mp4`` (see :mod:`fer_core.video`). A progress bar (frames, fps,
ETA) goes to stderr when it is a terminal or with ``--progress``; ``--json`` prints the summary on
stdout. Warnings (a truncated file, no face found) go to stderr; the exit code is 0 when outputs
were written, 2 for a bad input or setting.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fer_core.job_events import Meter, fmt_duration
from fer_core.resolve import add_model_argument, resolve_model


def add_parser(sub) -> None:
    p = sub.add_parser("video", help="emotions over time per face in a video file")
    p.add_argument("input", metavar="INPUT", help="video file (MP4, WebM, MOV, MKV, AVI)")
    p.add_argument("--out", required=True, help="folder for frames.csv, summary.json, ...")
    add_model_argument(p)
    p.add_argument("--every", type=int, default=None,
                   help="analyse (detect + classify) every N-th frame, track faces in between "
                        "(default 5)")
    p.add_argument("--smoothing", type=float, default=0.0,
                   help="per-face EMA of the probabilities in [0, 1) (adds *_smoothed columns)")
    p.add_argument("--annotate", action="store_true",
                   help="also write an annotated video (boxes, labels, emotion timeline)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--progress", action="store_true",
                   help="progress bar on stderr even when it is not a terminal")
    from fer_core.detectors import add_argument
    add_argument(p)
    p.set_defaults(func=run)


class ProgressBar:
    """``[#####.....]  120/900 frames  310 fps  ETA 0:03`` redrawn in place on a stream (tqdm when
    installed). ``total`` may be None (unknown length): no bar, no ETA."""

    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream, self.width = stream, width
        self._tqdm = None
        self._meter = None
        try:
            from tqdm import tqdm
            self._tqdm_cls = tqdm
        except ImportError:
            self._tqdm_cls = None

    def __call__(self, done: int, total: int | None, **extra) -> None:
        if self._tqdm_cls is not None:
            if self._tqdm is None:
                self._tqdm = self._tqdm_cls(total=total, unit="frame", file=self.stream)
            self._tqdm.update(done - self._tqdm.n)
            return
        if self._meter is None:  # the clock starts at the first frame (not at model loading)
            self._meter = Meter(total)
        rate, eta_sec = self._meter.update(done)
        if total:
            frac = min(1.0, done / total)
            fill = int(round(frac * self.width))
            bar = f"[{'#' * fill}{'.' * (self.width - fill)}] {done}/{total} frames"
            tail = f"  ETA {fmt_duration(eta_sec if done < total else 0, unknown='?')}"
        else:
            bar, tail = f"{done} frames", ""
        self.stream.write(f"\r{bar}  {rate or 0:5.0f} fps{tail}   ")
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            self.stream.write("\n")
            self.stream.flush()


def run(args) -> int:
    from fer_core.cli import emit
    from fer_core.errors import FerError

    src = Path(os.path.expanduser(args.input))
    if not src.is_file():  # fail fast, before loading TensorFlow
        raise FerError("no such video file" if not src.exists() else "not a file", where=str(src))
    out = Path(os.path.expanduser(args.out))
    if out.exists() and not out.is_dir():
        raise FerError("exists and is not a folder", where=str(out))

    from fer_core import video

    from fer_core.vision import FaceDetector
    FaceDetector(video.detector_config(args.detector))  # unknown detector / missing package
    video.probe(src)  # not a video / unsupported codec / no frames: before the model loads
    model = resolve_model(args.model, where="--model")
    every = video.DEFAULT_EVERY if args.every is None else args.every
    bar = ProgressBar() if (args.progress or sys.stderr.isatty()) else None
    try:
        summary = video.analyze(src, out, model=model, every=every,
                                smoothing=args.smoothing, annotate=args.annotate, progress=bar,
                                detector=args.detector)
    finally:
        if bar is not None:
            bar.close()
    for w in summary["warnings"]:
        print(f"warning: {src}: {w}", file=sys.stderr)
    v, p = summary["video"], summary["processing"]
    lines = [f"{src}: {v['frames']} frames, {v['duration_s']:.1f} s, {v['width']}x{v['height']}; "
             f"analysed every {p['every']} frame(s) in {p['seconds']:.1f} s "
             f"({p['frames_per_sec']} frames/s)"]
    for f in summary["faces"]:
        top = sorted(f["share"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"  face #{f['id']}: {f['first_s']:.1f}-{f['last_s']:.1f} s, "
                     f"{f['dominant']} (" + ", ".join(f"{k} {v:.0%}" for k, v in top) + ")")
    lines.append(f"  wrote {out / video.FRAMES_CSV}, {out / video.SUMMARY_JSON}"
                 + (f", {out / summary['outputs']['annotated']}"
                    if summary["outputs"]["annotated"] else ""))
    emit(args, summary, "\n".join(lines))
    return 0
