"""Per-frame work of the live webcam: detect, track, classify, smooth, draw. UI-free.

    annotator = FrameAnnotator(predictor, smoothing=0.6, detect_every=3, mode="box")
    out = annotator(bgr_frame)          # in the video callback (any thread)
    annotator.latest(); annotator.history(30); annotator.summary(); annotator.to_csv()

* The per-frame work is the one face step shared with video files
  (:class:`fer_core.tracking.FaceStep`): a full-frame detection every ``detect_every`` frames
  (or when no face is tracked); in between only the regions around known faces are searched.
  Faces keep an id ("#1") while missed for up to ``max_missing`` frames (30: about a second), and
  a new face is shown once it is confirmed (found on two frames).
* Smoothing: per face, an exponential moving average of the probabilities,
  ``p = smoothing * p_prev + (1 - smoothing) * p_new`` (0 = none); ``window=N`` sets
  ``smoothing = 1 - 2 / (N + 1)`` (the EMA whose mean age equals an N-frame average).
* Never blocks the video: if the previous frame is still being processed (another thread), the
  frame is returned at once with the last known annotations and counted as skipped.
* State for the page (thread-safe): latest result, a bounded per-face score history for the
  live chart (timestamps, no frames: frames are never stored), a session summary (share of time
  per emotion) and a CSV export.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import deque

import cv2
import numpy as np

from fer_core.drawing import annotate
from fer_core.errors import FerError
from fer_core.predict import Predictor
from fer_core.tracking import FaceStep, TrackedFace

__all__ = ["FrameAnnotator", "TrackedFace"]


class FrameAnnotator:
    """Callable ``frame (BGR uint8) -> annotated frame``; safe to call from any thread."""

    def __init__(self, predictor: Predictor, smoothing: float = 0.5, window: int | None = None,
                 detect_every: int = 3, mode: str = "box", show_fps: bool = True,
                 history_seconds: float = 30.0, max_rows: int = 200_000, max_missing: int = 30,
                 clock=time.time):
        if window is not None:
            if int(window) < 1:
                raise FerError(f"window must be >= 1 frame, got {window}", where="window")
            smoothing = 1.0 - 2.0 / (int(window) + 1)
        if not 0.0 <= float(smoothing) < 1.0:
            raise FerError(f"smoothing must be in [0, 1), got {smoothing}", where="smoothing")
        if int(detect_every) < 1:
            raise FerError(f"detect_every must be >= 1, got {detect_every}", where="detect_every")
        if mode not in ("box", "emoji"):
            raise FerError(f"unknown overlay mode {mode!r}; expected 'box' or 'emoji'",
                           where="mode")
        self.predictor = predictor
        self.labels = tuple(predictor.labels)
        self.smoothing = float(smoothing)
        self.detect_every = int(detect_every)
        self.mode = mode
        self.show_fps = bool(show_fps)
        self.history_seconds = float(history_seconds)
        self.max_missing = int(max_missing)
        self._clock = clock
        self._busy = threading.Lock()      # held while a frame is processed
        self._state = threading.Lock()     # guards everything below
        self._rows: deque = deque(maxlen=int(max_rows))   # (t, face_id, probs)
        self.reset()

    # ---- settings that the page may change live -------------------------------------------
    def configure(self, *, smoothing: float | None = None, mode: str | None = None,
                  detect_every: int | None = None, show_fps: bool | None = None) -> None:
        with self._state:
            if smoothing is not None:
                if not 0.0 <= float(smoothing) < 1.0:
                    raise FerError(f"smoothing must be in [0, 1), got {smoothing}",
                                   where="smoothing")
                self.smoothing = float(smoothing)
            if mode is not None:
                if mode not in ("box", "emoji"):
                    raise FerError(f"unknown overlay mode {mode!r}", where="mode")
                self.mode = mode
            if detect_every is not None:
                self.detect_every = max(1, int(detect_every))
            if show_fps is not None:
                self.show_fps = bool(show_fps)

    def reset(self) -> None:
        """Forget tracks, history and the session summary."""
        with self._state:
            self._step = FaceStep(self.predictor, every=1, full_every=self.detect_every,
                                  smoothing=self.smoothing, max_missing=self.max_missing)
            self._frame_no = 0
            self._drawn: list[TrackedFace] = []
            self._rows.clear()
            self._time_per_label = np.zeros(len(self.labels))
            self._last_t: float | None = None
            self.frames = 0        # frames received
            self.processed = 0     # frames run through the model
            self.skipped = 0       # frames returned with stale annotations (busy)
            self.latency_ms = 0.0  # EMA of processing time
            self.fps = 0.0         # EMA of received frames per second
            self._last_arrival: float | None = None

    # ---- the callback ----------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3:
            raise FerError("expected a BGR uint8 frame (H, W, 3)", where="frame")
        now = time.perf_counter()
        with self._state:
            self.frames += 1
            if self._last_arrival is not None:
                dt = now - self._last_arrival
                if dt > 0:
                    self.fps = 1.0 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / dt
            self._last_arrival = now
        if not self._busy.acquire(blocking=False):
            with self._state:
                self.skipped += 1
                drawn, mode = list(self._drawn), self.mode
            return self._overlay(annotate(frame, drawn, mode, stale=True))
        try:
            t0 = time.perf_counter()
            drawn = self._process(frame)
            ms = (time.perf_counter() - t0) * 1000
            with self._state:
                self.processed += 1
                self.latency_ms = ms if self.processed == 1 else 0.8 * self.latency_ms + 0.2 * ms
                mode = self.mode
            return self._overlay(annotate(frame, drawn, mode))
        finally:
            self._busy.release()

    def _process(self, frame: np.ndarray) -> list[TrackedFace]:
        with self._state:
            frame_no = self._frame_no
            self._frame_no += 1
            step = self._step
            step.full_every, step.smoothing = self.detect_every, self.smoothing
        faces = step(frame, frame_no)   # only this (busy-locked) thread runs the step
        t = self._clock()
        with self._state:
            self._drawn = faces
            dt = 0.0 if self._last_t is None else min(max(t - self._last_t, 0.0), 1.0)
            self._last_t = t
            for f in faces:
                self._rows.append((t, f.id, f.probs.astype(np.float32)))
                self._time_per_label[int(np.argmax(f.probs))] += dt if dt > 0 else 1e-3
        return faces

    def _overlay(self, img: np.ndarray) -> np.ndarray:
        if not self.show_fps:
            return img
        with self._state:
            text = f"{self.fps:4.1f} fps  {self.latency_ms:4.1f} ms"
            if self.skipped:
                text += f"  skipped {self.skipped}"
        scale = max(0.45, img.shape[1] / 1100)
        (tw, th), bl = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(img, (4, 4), (12 + tw, 12 + th + bl), (0, 0, 0), -1)
        cv2.putText(img, text, (8, 8 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
        return img

    # ---- what the page reads (any thread) -------------------------------------------------
    def latest(self) -> dict:
        """The most recent result: faces (id, box, emotion, scores) and live statistics."""
        with self._state:
            faces = [f.to_dict() for f in self._drawn]
            return {"timestamp": self._last_t, "faces": faces, "fps": round(self.fps, 2),
                    "latency_ms": round(self.latency_ms, 2), "frames": self.frames,
                    "processed": self.processed, "skipped": self.skipped}

    def history(self, seconds: float | None = None) -> list[dict]:
        """Per-face scores of the last ``seconds`` (default ``history_seconds``), oldest first:
        ``[{"timestamp", "face", <label>: p, ...}]``."""
        seconds = self.history_seconds if seconds is None else float(seconds)
        with self._state:
            if not self._rows:
                return []
            cut = self._rows[-1][0] - seconds
            rows = []
            for t, fid, p in reversed(self._rows):
                if t < cut:
                    break
                rows.append((t, fid, p))
        rows.reverse()
        return [{"timestamp": t, "face": fid, **{n: float(v) for n, v in zip(self.labels, p)}}
                for t, fid, p in rows]

    def history_frame(self, seconds: float | None = None):
        """:meth:`history` as a pandas DataFrame (``time`` column as datetimes) for charts."""
        import pandas as pd
        df = pd.DataFrame(self.history(seconds), columns=["timestamp", "face", *self.labels])
        df.insert(0, "time", pd.to_datetime(df["timestamp"], unit="s"))
        return df

    def summary(self) -> dict[str, float]:
        """Share of the session's face-time per dominant emotion (sums to 1; zeros if empty)."""
        with self._state:
            total = float(self._time_per_label.sum())
            shares = self._time_per_label / total if total > 0 else self._time_per_label * 0
            return {n: float(v) for n, v in zip(self.labels, shares)}

    def seconds_tracked(self) -> float:
        with self._state:
            return float(self._time_per_label.sum())

    def to_csv(self) -> str:
        """The session's per-face scores as CSV: timestamp (Unix seconds), face, one column per
        label. Bounded by ``max_rows`` (oldest rows dropped first)."""
        with self._state:
            rows = list(self._rows)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["timestamp", "face", *self.labels])
        for t, fid, p in rows:
            w.writerow([f"{t:.3f}", fid, *(f"{float(v):.5f}" for v in p)])
        return buf.getvalue()
