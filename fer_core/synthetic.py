"""Drawn test media: faces, webcam-like frames and video clips, for tests and benchmarks.

:func:`synthetic_face` is a shaded cartoon face the Haar cascade detects; :func:`synthetic_frame`
puts one in a webcam-like scene; :func:`synthetic_clip` writes a video of drawn faces moving over
a still background (any frame rate, variable frame times, phone-style rotation). Nothing here is
used by the product's own paths. (The synthetic *dataset* of 48x48 faces the app trains on is
:mod:`fer_core.data.demo`: it is data, loaded through ``fer_core.data.load("demo")``.)
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


def synthetic_face(size: int = 160, smile: bool = True, background: int = 200) -> np.ndarray:
    """A shaded cartoon face (hair, eye sockets, brows, nose, mouth) that the Haar cascade
    detects, BGR uint8 of shape (3*size, 2*size, 3), face centred. For benchmarks and tests."""
    S = int(size)
    img = np.full((S * 3, S * 2, 3), background, np.uint8)
    H, W = img.shape[:2]
    cx, cy = W // 2, H // 2
    cv2.ellipse(img, (cx, cy - int(.12 * S)), (int(.46 * S), int(.56 * S)), 0, 0, 360,
                (40, 45, 60), -1)
    cv2.rectangle(img, (cx - int(.15 * S), cy + int(.4 * S)), (cx + int(.15 * S), H),
                  (120, 145, 185), -1)
    cv2.ellipse(img, (cx, cy), (int(.38 * S), int(.5 * S)), 0, 0, 360, (140, 165, 205), -1)
    for dx in (-1, 1):
        ex, ey = cx + dx * int(.16 * S), cy - int(.08 * S)
        cv2.ellipse(img, (ex, ey), (int(.11 * S), int(.06 * S)), 0, 0, 360, (95, 110, 140), -1)
        cv2.ellipse(img, (ex, ey), (int(.07 * S), int(.03 * S)), 0, 0, 360, (235, 235, 235), -1)
        cv2.circle(img, (ex, ey), max(1, int(.028 * S)), (30, 30, 30), -1)
        cv2.line(img, (ex - int(.09 * S), ey - int(.09 * S)), (ex + int(.09 * S), ey - int(.1 * S)),
                 (40, 45, 60), max(2, S // 30))
    cv2.line(img, (cx, cy - int(.05 * S)), (cx, cy + int(.12 * S)), (120, 140, 180),
             max(2, S // 40))
    cv2.ellipse(img, (cx, cy + int(.13 * S)), (int(.06 * S), int(.025 * S)), 0, 0, 360,
                (100, 120, 160), -1)
    start, end = (0, 180) if smile else (180, 360)
    cv2.ellipse(img, (cx, cy + int(.27 * S) + (0 if smile else int(.04 * S))),
                (int(.14 * S), int(.06 * S)), 0, start, end, (70, 70, 150), max(3, S // 25))
    return cv2.GaussianBlur(img, (0, 0), max(S / 80, 0.5))


def synthetic_frame(width: int = 640, height: int = 480, face_size: int = 160,
                    centre: tuple[int, int] | None = None, smile: bool = True,
                    seed: int = 0) -> np.ndarray:
    """A BGR webcam-like frame (shaded wall, a shelf, a lamp) with one synthetic face."""
    return synthetic_group(width, height, [centre or (width // 2, height // 2)], face_size,
                           smile=smile, seed=seed)


def synthetic_group(width: int, height: int, centres, face_size: int = 160,
                    smile: bool = True, seed: int = 0) -> np.ndarray:
    """:func:`synthetic_frame` with one synthetic face at each of ``centres`` ((x, y) pixels),
    all of ``face_size``: a group photo the tests can make at any size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    wall = (70 + 90 * xx / width + 40 * yy / height).astype(np.uint8)
    frame = cv2.merge([wall, (wall * 0.95).astype(np.uint8), (wall * 0.9).astype(np.uint8)])
    cv2.rectangle(frame, (10, int(height * .62)), (int(width * .28), height - 5), (50, 60, 80), -1)
    cv2.circle(frame, (int(width * .87), int(height * .2)), max(10, width // 13),
               (200, 220, 235), -1)
    cv2.line(frame, (0, int(height * .42)), (width, int(height * .54)), (210, 210, 210), 3)
    face = synthetic_face(face_size, smile=smile, background=0)
    mask = synthetic_face(face_size, smile=smile, background=255)
    alpha = (face.astype(np.int16) != mask.astype(np.int16)).any(axis=2)
    alpha = ~alpha  # pixels that do not depend on the background belong to the face
    fh, fw = face.shape[:2]
    for cx, cy in centres:
        x0, y0 = int(cx) - fw // 2, int(cy) - fh // 2
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        dx1, dy1 = min(width, x0 + fw), min(height, y0 + fh)
        if dx1 <= dx0 or dy1 <= dy0:
            continue
        region = frame[dy0:dy1, dx0:dx1]
        sub_a = alpha[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
        region[sub_a] = face[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0][sub_a]
    noise = rng.integers(0, 4, frame.shape, dtype=np.uint8)
    return cv2.add(frame, noise)


def synthetic_clip(path, seconds: float = 2.0, fps: float = 30, size=(640, 480), faces: int = 2,
                   codec: str = "libx264", rotation: int = 0, frame_times=None,
                   face_size: int = 90, moving: bool = True, visible=None) -> Path:
    """Write a clip of drawn faces (the Haar-detectable :func:`vision.synthetic_face`) moving
    over a still background, for tests and benchmarks. ``frame_times`` (seconds) makes a
    variable-frame-rate clip; ``rotation`` (counter-clockwise degrees) stores the picture sideways
    with a display-matrix rotation that shows it upright, as phones do (``size`` is the displayed
    size). The container follows the suffix (.mp4, .mkv, .webm, .avi). ``visible(face, t)``
    (optional) says whether face number ``face`` is drawn at time ``t`` (faces that leave and
    come back)."""
    from fer_core.video import _av
    av = _av()
    path = Path(path)
    w, h = size
    bg = synthetic_frame(w, h, face_size=8, centre=(-50, -50))
    sprites = []
    for k in range(faces):
        f = synthetic_face(face_size, smile=(k % 2 == 0), background=0)
        m = synthetic_face(face_size, smile=(k % 2 == 0), background=255)
        sprites.append((f, ~((f.astype(np.int16) != m.astype(np.int16)).any(2))))
    times = (list(frame_times) if frame_times is not None
             else [i / fps for i in range(int(round(seconds * fps)))])
    fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(
        path.suffix.lower(), "mp4")
    quarter = (int(rotation) % 360) // 90
    out = av.open(str(path), "w", format=fmt)
    s = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    s.width, s.height = (h, w) if quarter % 2 else (w, h)
    s.pix_fmt = "yuv420p"
    if codec == "libx264":
        s.options = {"preset": "ultrafast", "crf": "20"}
    s.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        s.set_display_rotation(rotation)
    for i, t in enumerate(times):
        img = bg.copy()
        for k, (sprite, alpha) in enumerate(sprites):
            if visible is not None and not visible(k, t):
                continue
            sh, sw = sprite.shape[:2]
            cx = int((k + 0.5) * w / max(faces, 1))
            cy = h // 2
            if moving:
                cx += int(0.08 * w * math.sin(t * 1.3 + k))
                cy += int(0.05 * h * math.cos(t * 1.1 + k))
            x0, y0 = max(0, cx - sw // 2), max(0, cy - sh // 2)
            x1, y1 = min(w, x0 + sw), min(h, y0 + sh)
            a = alpha[:y1 - y0, :x1 - x0]
            img[y0:y1, x0:x1][a] = sprite[:y1 - y0, :x1 - x0][a]
        if quarter:  # stored as a phone does: sideways, with the rotation that shows it upright
            img = np.ascontiguousarray(np.rot90(img, -quarter))
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
        for p in s.encode(frame):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return path
