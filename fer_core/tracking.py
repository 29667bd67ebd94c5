"""Face tracks across frames: stable ids, a detection plan, optional probability smoothing.

Shared by the live webcam (:mod:`fer_core.webcam`) and video files (:mod:`fer_core.video`):

    tracker = Tracker(max_missing=5)
    near = tracker.search_regions(frame_no, detect_every=5)   # None: search the whole frame
    boxes = find_faces(predictor.detect, frame, near)           # Haar near known faces, or all
    tracks = tracker.update(boxes, frame_no, probs, smoothing=0.5)  # one Track per box, in order
    tracker.follow(prev_grey, grey, frame_no)   # between detections: template matching (video)

* Plan: a full-frame detection every ``detect_every`` frames, or whenever no face was seen on the
  previous frame; in between only the regions around the faces of the previous frame are
  searched (a few Haar scales on small crops), and if that finds fewer faces than it looked for,
  the whole frame is searched again.
* Matching: greedy assignment of detections to tracks by IoU, with a bonus for centres closer
  than half a face width. Unmatched detections start a new track with the next id; a track not
  detected for more than ``max_missing`` frames is dropped, so an id stays with a face while it
  is in view (or hidden for at most ``max_missing`` frames).
* Following (video files): between two detections :meth:`Tracker.follow` moves each box by
  template matching on the grey frames, which costs a fraction of a Haar search.
* Smoothing (optional): per track, ``probs = smoothing * probs + (1 - smoothing) * new``.

Not thread-safe: a caller that shares a tracker between threads holds its own lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fer_core.vision import iou

__all__ = ["Track", "Tracker", "find_faces"]


@dataclass
class Track:
    id: int
    box: np.ndarray
    probs: np.ndarray | None
    last_seen: int
    hits: int = 1
    first_seen: int = field(default=-1)
    last_detected: int = field(default=-1)

    def __post_init__(self):
        if self.first_seen < 0:
            self.first_seen = self.last_seen
        if self.last_detected < 0:
            self.last_detected = self.last_seen


def find_faces(detect, frame: np.ndarray, near) -> np.ndarray:
    """Boxes from ``detect(frame, near=...)``: near the given boxes, or in the whole frame when
    ``near`` is None or the local search found fewer faces than it looked for."""
    if near is None:
        return detect(frame)
    boxes = detect(frame, near=near)
    if len(boxes) < len(near):
        boxes = detect(frame)  # lost a face: look everywhere
    return boxes


class Tracker:
    """Assigns detections to tracks with stable ids (see the module docstring)."""

    def __init__(self, max_missing: int = 5):
        self.max_missing = int(max_missing)
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self.next_id = 1

    def search_regions(self, frame_no: int, detect_every: int) -> list | None:
        """Boxes to search around on frame ``frame_no``, or None for a full-frame detection."""
        near = [t.box for t in self.tracks if frame_no - t.last_seen <= 1]
        if frame_no % max(1, int(detect_every)) == 0 or not near:
            return None
        return near

    def update(self, boxes, frame_no: int, probs: np.ndarray | None = None,
               smoothing: float = 0.0) -> list[Track]:
        """Match ``boxes`` (N, 4) of frame ``frame_no`` to tracks; returns the N tracks in box
        order. With ``probs`` (N, C) each track's probabilities are updated (EMA with
        ``smoothing``, renormalised). Tracks not detected for more than ``max_missing`` frames
        are dropped."""
        boxes = np.asarray(boxes).reshape(-1, 4)
        pairs = []
        for j, b in enumerate(boxes):
            cb = np.array([b[0] + b[2] / 2, b[1] + b[3] / 2], dtype=np.float64)
            for k, tr in enumerate(self.tracks):
                o = iou(b, tr.box)
                ct = np.array([tr.box[0] + tr.box[2] / 2, tr.box[1] + tr.box[3] / 2])
                close = np.linalg.norm(cb - ct) < 0.5 * max(b[2], tr.box[2])
                if o > 0.2 or close:
                    pairs.append((o + (0.1 if close else 0.0), j, k))
        pairs.sort(reverse=True)
        used_d, used_t, result = set(), set(), {}
        for _, j, k in pairs:
            if j in used_d or k in used_t:
                continue
            used_d.add(j)
            used_t.add(k)
            tr = self.tracks[k]
            if probs is not None:
                new = np.asarray(probs[j], dtype=np.float64)
                if tr.probs is None:
                    tr.probs = new.copy()
                else:
                    tr.probs = smoothing * tr.probs + (1 - smoothing) * new
                    tr.probs = tr.probs / tr.probs.sum()
            tr.box = np.asarray(boxes[j])
            tr.last_seen = tr.last_detected = frame_no
            tr.hits += 1
            result[j] = tr
        for j, b in enumerate(boxes):
            if j not in result:
                p = None if probs is None else np.asarray(probs[j], dtype=np.float64).copy()
                tr = Track(self.next_id, np.asarray(b), p, frame_no)
                self.next_id += 1
                self.tracks.append(tr)
                result[j] = tr
        self.tracks = [tr for tr in self.tracks
                       if frame_no - tr.last_detected <= self.max_missing]
        return [result[j] for j in range(len(boxes))]

    def follow(self, prev: np.ndarray, grey: np.ndarray, frame_no: int,
               min_score: float = 0.5) -> list[Track]:
        """Move each track's box from grey frame ``prev`` to grey frame ``grey`` by template
        matching (normalised cross-correlation of the face, shrunk to ~24 px, within half a face
        of where it was): the cheap step between two detections. Tracks whose best match scores
        below ``min_score`` stay put and are not marked seen. Only a detection (:meth:`update`)
        keeps a track alive. Returns the tracks that moved."""
        h, w = grey.shape[:2]
        moved = []
        for tr in self.tracks:
            x, y, bw, bh = (int(v) for v in tr.box)
            if bw < 8 or bh < 8:
                continue
            f = min(1.0, 24.0 / bw)
            pad = bw // 2
            tx0, ty0 = max(0, x), max(0, y)
            tx1, ty1 = min(w, x + bw), min(h, y + bh)
            sx0, sy0 = max(0, x - pad), max(0, y - pad)
            sx1, sy1 = min(w, x + bw + pad), min(h, y + bh + pad)
            if tx1 - tx0 < 8 or ty1 - ty0 < 8:
                continue
            tmpl = cv2.resize(prev[ty0:ty1, tx0:tx1], None, fx=f, fy=f,
                              interpolation=cv2.INTER_AREA)
            area = cv2.resize(grey[sy0:sy1, sx0:sx1], None, fx=f, fy=f,
                              interpolation=cv2.INTER_AREA)
            if (area.shape[0] < tmpl.shape[0] or area.shape[1] < tmpl.shape[1]
                    or tmpl.size == 0):
                continue
            res = cv2.matchTemplate(area, tmpl, cv2.TM_CCOEFF_NORMED)
            _, score, _, (mx, my) = cv2.minMaxLoc(res)
            if not np.isfinite(score) or score < min_score:
                continue
            nx = int(round(sx0 + mx / f)) - (tx0 - x)
            ny = int(round(sy0 + my / f)) - (ty0 - y)
            tr.box = np.array([nx, ny, bw, bh], dtype=np.int64)
            tr.last_seen = frame_no
            moved.append(tr)
        return moved
