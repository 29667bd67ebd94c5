"""Faces across frames: the one per-frame step, ``step(frame, index) -> list[TrackedFace]``.

Shared by the live webcam (:mod:`fer_core.webcam`) and video files (:mod:`fer_core.video`):

    step = FaceStep(predictor, every=1, full_every=3, smoothing=0.5, max_missing=30)
    for index, frame in enumerate(frames):
        faces = step(frame, index)        # TrackedFace: id, box, landmarks, probs, emotion

* Plan: every ``every``-th frame is *analysed*: a whole-frame detection every ``full_every``
  frames, or whenever no face was seen lately; in between only the regions around the known
  faces are searched, and if that finds fewer faces than it looked for, the whole frame is
  searched again. Detections are classified in one model call (aligned on the eyes when the
  detector gives landmarks). With ``follow=True`` (video files) the frames in between move each
  box by template matching (:meth:`Tracker.follow`), a fraction of a detection's cost.
* Identities: detections are matched to tracks greedily by IoU, with a bonus for centres closer
  than half a face width. A track missed for up to ``max_missing`` frames (about one second:
  the video uses the frame rate, the webcam 30 frames) keeps its id when a face is found again
  near where it was last seen (centre within one face width, size within 0.5-2x). Unmatched
  detections start a new track, which is *confirmed* once detected on ``confirm`` analysed frames
  (default 2); only confirmed tracks are returned, so a one-frame false box never becomes a
  person (in the webcam overlay, ``frames.csv`` or ``summary.json``).
* Smoothing (optional): per track, ``probs = smoothing * probs + (1 - smoothing) * new``.

Not thread-safe: a caller that shares a step or tracker between threads holds its own lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fer_core.vision import iou

__all__ = ["Track", "Tracker", "TrackedFace", "FaceStep", "find_faces"]


@dataclass
class Track:
    """A tracker's state for one face (internal; callers get :class:`TrackedFace`)."""

    id: int
    box: np.ndarray
    probs: np.ndarray | None
    last_seen: int
    hits: int = 1
    first_seen: int = field(default=-1)
    last_detected: int = field(default=-1)
    landmarks: np.ndarray | None = None
    raw: np.ndarray | None = None

    def __post_init__(self):
        if self.first_seen < 0:
            self.first_seen = self.last_seen
        if self.last_detected < 0:
            self.last_detected = self.last_seen


@dataclass(frozen=True)
class TrackedFace:
    """One face of one frame: the value the webcam, video sinks and drawing use.

    ``box`` [x, y, w, h] pixels, ``landmarks`` (5, 2) or None, ``id`` the track id, ``probs``
    the (smoothed) probabilities, ``raw`` this detection's own probabilities, ``emotion`` the
    argmax label of ``probs``, ``scores`` label -> probability, ``detected`` False when the box
    was moved by following rather than found by the detector on this frame."""

    id: int
    box: tuple[int, int, int, int]
    landmarks: np.ndarray | None
    probs: np.ndarray
    raw: np.ndarray
    emotion: str
    scores: dict[str, float]
    detected: bool = True

    @property
    def confidence(self) -> float:
        return self.scores[self.emotion]

    def to_dict(self) -> dict:
        return {"id": self.id, "box": [int(v) for v in self.box], "emotion": self.emotion,
                "confidence": round(float(self.confidence), 6),
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()}}


def find_faces(detect, frame: np.ndarray, near):
    """Detections from ``detect(frame, near=...)``: near the given boxes, or in the whole frame
    when ``near`` is None or the local search found fewer faces than it looked for."""
    if near is None:
        return detect(frame)
    found = detect(frame, near=near)
    if len(found) < len(near):
        found = detect(frame)  # lost a face: look everywhere
    return found


class Tracker:
    """Assigns detections to tracks with stable ids (see the module docstring)."""

    def __init__(self, max_missing: int = 5, confirm: int = 2):
        self.max_missing = int(max_missing)
        self.confirm = max(1, int(confirm))
        self.gap = 1   # frames between two analysed frames
        self.reset()

    def reset(self) -> None:
        self.tracks: list[Track] = []
        self.next_id = 1

    def confirmed(self, tr: Track) -> bool:
        return tr.hits >= self.confirm

    def search_regions(self, frame_no: int, full_every: int) -> list | None:
        """Boxes to search around on frame ``frame_no``, or None for a whole-frame detection."""
        near = [t.box for t in self.tracks if frame_no - t.last_seen <= self.gap]
        if frame_no % max(1, int(full_every)) == 0 or not near:
            return None
        return near

    def update(self, boxes, frame_no: int, probs: np.ndarray | None = None,
               smoothing: float = 0.0, landmarks=None) -> list[Track]:
        """Match ``boxes`` (N, 4) of frame ``frame_no`` to tracks; returns the N tracks in box
        order. With ``probs`` (N, C) each track's probabilities are updated (EMA with
        ``smoothing``, renormalised). Tracks not detected for more than ``max_missing`` frames
        are dropped."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        pairs = []
        for j, b in enumerate(boxes):
            cb = np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])
            for k, tr in enumerate(self.tracks):
                o = iou(b, tr.box)
                ct = np.array([tr.box[0] + tr.box[2] / 2, tr.box[1] + tr.box[3] / 2])
                dist = float(np.linalg.norm(cb - ct))
                lost = frame_no - tr.last_seen > self.gap
                ratio = b[2] / max(float(tr.box[2]), 1e-6)
                close = dist < 0.5 * max(b[2], tr.box[2])
                # a face missed for a while may come back a little further away
                back = lost and dist < 1.0 * max(b[2], tr.box[2]) and 0.5 <= ratio <= 2.0
                if o > 0.2 or close or back:
                    pairs.append((o + (0.1 if close else 0.0) + (0.05 if back else 0.0), j, k))
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
                tr.raw = new
                if tr.probs is None:
                    tr.probs = new.copy()
                else:
                    tr.probs = smoothing * tr.probs + (1 - smoothing) * new
                    tr.probs = tr.probs / tr.probs.sum()
            tr.box = boxes[j].copy()
            tr.landmarks = None if landmarks is None else np.asarray(landmarks[j])
            tr.last_seen = tr.last_detected = frame_no
            tr.hits += 1
            result[j] = tr
        for j, b in enumerate(boxes):
            if j not in result:
                p = None if probs is None else np.asarray(probs[j], dtype=np.float64).copy()
                tr = Track(self.next_id, b.copy(), p, frame_no, raw=p,
                           landmarks=None if landmarks is None else np.asarray(landmarks[j]))
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
            if frame_no - tr.last_seen > self.gap:
                continue  # lost: wait for a detection
            x, y, bw, bh = (int(round(v)) for v in tr.box)
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
            dx, dy = nx - x, ny - y
            tr.box = np.array([nx, ny, bw, bh], dtype=np.float64)
            if tr.landmarks is not None:
                tr.landmarks = tr.landmarks + np.array([dx, dy], dtype=np.float32)
            tr.last_seen = frame_no
            moved.append(tr)
        return moved


class FaceStep:
    """The one per-frame face step: ``step(frame, index) -> list[TrackedFace]``.

    ``frame``: BGR or grey uint8; ``index``: the frame number (increasing). See the module
    docstring for the plan (``every``, ``full_every``, ``follow``), identities (``max_missing``,
    ``confirm``) and ``smoothing``. Returns the confirmed faces of the latest analysed frame
    (moved by following on the frames in between), oldest track first.
    """

    def __init__(self, predictor, *, every: int = 1, full_every: int = 3,
                 smoothing: float = 0.0, max_missing: int = 5, confirm: int = 2,
                 follow: bool = False):
        self.predictor = predictor
        self.labels = tuple(predictor.labels)
        self.every = max(1, int(every))
        self.full_every = max(1, int(full_every))
        self.smoothing = float(smoothing)
        self.follow = bool(follow)
        self.tracker = Tracker(max_missing, confirm)
        self.tracker.gap = self.every
        self.last_analysed = -1
        self._prev_grey: np.ndarray | None = None

    def reset(self) -> None:
        self.tracker.reset()
        self.last_analysed = -1
        self._prev_grey = None

    def analysed(self, index: int) -> bool:
        return index % self.every == 0

    def __call__(self, frame: np.ndarray, index: int) -> list[TrackedFace]:
        return self.step(frame, index)

    def step(self, frame: np.ndarray, index: int) -> list[TrackedFace]:
        tracker = self.tracker
        if self.follow:
            grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if self._prev_grey is not None:
                tracker.follow(self._prev_grey, grey, index)
            self._prev_grey = grey
        if self.analysed(index):
            p = self.predictor
            near = tracker.search_regions(index, self.full_every)
            dets = find_faces(p.detect, frame, near)
            probs = (p.predict_faces(p.crops(frame, dets)) if len(dets)
                     else np.zeros((0, len(self.labels)), np.float32))
            tracker.update(dets.boxes, index, probs, self.smoothing,
                           landmarks=dets.landmarks)
            self.last_analysed = index
        return [self._face(tr, index) for tr in tracker.tracks
                if tr.last_detected == self.last_analysed and tracker.confirmed(tr)]

    def _face(self, tr: Track, index: int) -> TrackedFace:
        probs = tr.probs
        lab = int(np.argmax(probs))
        return TrackedFace(
            id=tr.id, box=tuple(int(round(v)) for v in tr.box), landmarks=tr.landmarks,
            probs=probs, raw=tr.raw if tr.raw is not None else probs,
            emotion=self.labels[lab], scores={n: float(v) for n, v in zip(self.labels, probs)},
            detected=tr.last_detected == index)
