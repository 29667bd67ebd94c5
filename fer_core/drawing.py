"""Drawing faces on images: boxes with "emotion 87%" labels, emoji overlays, emotion colours.

Takes the value types only: :class:`fer_core.model.FacePrediction` (photos) and
:class:`fer_core.tracking.TrackedFace` (webcam and video frames). UI-free, OpenCV primitives only
(no font files needed).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from fer_core import vision
from fer_core.errors import FerError
from fer_core.labels import EMOJI, canonical
from fer_core.model import FacePrediction
from fer_core.tracking import TrackedFace

__all__ = ["annotate", "emotion_colour", "emoji_char"]

_COLOURS = {  # BGR
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 150),
    "happy": (0, 200, 255), "sad": (200, 120, 40), "surprise": (0, 160, 255),
    "neutral": (170, 170, 170), "contempt": (120, 80, 160),
}


def emotion_colour(label: str) -> tuple[int, int, int]:
    try:
        return _COLOURS[canonical(label)]
    except FerError:
        return (0, 255, 0)


def annotate(image, faces: Sequence[FacePrediction | TrackedFace], mode: str = "box", *,
             stale: bool = False) -> np.ndarray:
    """An annotated BGR copy of ``image``: per face a box + "label 87%" (``mode="box"``) or
    the emotion's emoji drawn over the face, sized to its box (``mode="emoji"``).

    ``faces``: :class:`FacePrediction` (photos) or :class:`TrackedFace` (webcam and video: the
    track id is drawn as "#1"). ``stale`` draws thinner boxes (annotations from an older frame).
    """
    if mode not in ("box", "emoji"):
        raise FerError(f"unknown overlay mode {mode!r}; expected 'box' or 'emoji'", where="mode")
    img = vision.decode_image(image) if not isinstance(image, np.ndarray) else image
    out = vision.to_bgr(img).copy()
    h, w = out.shape[:2]
    base = max(0.4, min(1.2, max(h, w) / 1000))
    for f in faces:
        conf = float(f.scores.get(f.emotion, 0.0))
        x, y, bw, bh = (int(v) for v in f.box)
        colour = emotion_colour(f.emotion)
        text = f"{f.emotion} {conf:.0%}"
        if isinstance(f, TrackedFace):
            text = f"#{f.id} {text}"
        if mode == "emoji":
            _draw_emoji(out, (x + bw // 2, y + bh // 2), max(bw, bh) // 2 + 2, f.emotion)
        else:
            cv2.rectangle(out, (x, y), (x + bw, y + bh), colour,
                          1 if stale else max(2, int(round(2 * base))), cv2.LINE_AA)
        _label(out, text, x, y, y + bh, colour, base)
    return out


def _label(img, text, x, y_top, y_bottom, colour, base):
    scale = 0.5 * base + 0.15
    th = max(1, int(round(base * 1.5)))
    (tw, tht), bl = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, th)
    ty = y_top - 6 if y_top - tht - bl - 6 >= 0 else min(img.shape[0] - bl - 2,
                                                          y_bottom + tht + 6)
    x = max(0, min(x, img.shape[1] - tw - 4))
    cv2.rectangle(img, (x, ty - tht - 4), (x + tw + 4, ty + bl), colour, -1)
    lum = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    cv2.putText(img, text, (x + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if lum > 128 else (255, 255, 255), th, cv2.LINE_AA)


def _draw_emoji(img, centre, r, emotion):
    """A flat emoji face drawn with OpenCV primitives (no font needed)."""
    try:
        e = canonical(emotion)
    except FerError:
        e = "neutral"
    cx, cy = int(centre[0]), int(centre[1])
    r = max(int(r), 6)
    face = {"angry": (40, 90, 235), "disgust": (90, 200, 150)}.get(e, (40, 205, 255))
    dark = (30, 40, 60)
    t = max(1, r // 12)
    cv2.circle(img, (cx, cy), r, face, -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, (20, 120, 200), max(1, r // 25), cv2.LINE_AA)
    if e == "fear":  # pale blue forehead
        overlay = img.copy()
        cv2.ellipse(overlay, (cx, cy), (r, r), 0, 200, 340, (235, 200, 150), -1, cv2.LINE_AA)
        cv2.addWeighted(overlay, 0.6, img, 0.4, 0, dst=img)
    ex, ey = int(r * 0.36), int(r * 0.22)
    eyes = [(cx - ex, cy - ey), (cx + ex, cy - ey)]
    for k, (px, py) in enumerate(eyes):
        side = 1 if k == 0 else -1  # +1: the inner (nose) side is to the right
        if e in ("surprise", "fear"):
            cv2.circle(img, (px, py), int(r * 0.17), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(img, (px, py), int(r * 0.08), dark, -1, cv2.LINE_AA)
        elif e == "happy":
            cv2.ellipse(img, (px, py + int(r * .05)), (int(r * .14), int(r * .12)), 0, 180, 360,
                        dark, t + 1, cv2.LINE_AA)
        elif e == "disgust":
            cv2.line(img, (px - int(r * .14), py), (px + int(r * .14), py), dark, t + 1,
                     cv2.LINE_AA)
        else:
            cv2.ellipse(img, (px, py), (int(r * .08), int(r * .12)), 0, 0, 360, dark, -1,
                        cv2.LINE_AA)
        brow_y = py - int(r * 0.22)
        if e == "angry":  # inner ends down
            cv2.line(img, (px - side * int(r * .18), brow_y - int(r * .06)),
                     (px + side * int(r * .12), brow_y + int(r * .08)), dark, t + 1, cv2.LINE_AA)
        elif e in ("sad", "fear"):  # inner ends up
            cv2.line(img, (px - side * int(r * .18), brow_y + int(r * .06)),
                     (px + side * int(r * .12), brow_y - int(r * .06)), dark, t, cv2.LINE_AA)
        elif e == "surprise":
            cv2.ellipse(img, (px, brow_y - int(r * .04)), (int(r * .16), int(r * .08)), 0, 200,
                        340, dark, t, cv2.LINE_AA)
    my = cy + int(r * 0.42)
    mw = int(r * 0.42)
    if e == "happy":
        cv2.ellipse(img, (cx, cy + int(r * .2)), (mw, int(r * .36)), 0, 10, 170, dark, -1,
                    cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy + int(r * .45)), (int(mw * .6), int(r * .1)), 0, 0, 180,
                    (80, 80, 230), -1, cv2.LINE_AA)
    elif e in ("sad", "angry"):
        cv2.ellipse(img, (cx, my + int(r * .12)), (int(mw * .8), int(r * .18)), 0, 200, 340,
                    dark, t + 1, cv2.LINE_AA)
        if e == "sad":  # a tear
            tx, ty = eyes[1][0] + int(r * .05), eyes[1][1] + int(r * .22)
            cv2.circle(img, (tx, ty), max(2, int(r * .08)), (240, 170, 60), -1, cv2.LINE_AA)
    elif e == "surprise":
        cv2.ellipse(img, (cx, my), (int(r * .15), int(r * .2)), 0, 0, 360, dark, -1, cv2.LINE_AA)
    elif e == "fear":
        cv2.ellipse(img, (cx, my), (int(mw * .75), int(r * .14)), 0, 0, 360, dark, -1,
                    cv2.LINE_AA)
        cv2.line(img, (cx - int(mw * .6), my), (cx + int(mw * .6), my), (255, 255, 255), t,
                 cv2.LINE_AA)
    elif e == "disgust":
        xs = np.linspace(cx - mw, cx + mw, 7)
        ys = [my + (int(r * .06) if i % 2 else -int(r * .06)) for i in range(7)]
        cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, dark, t + 1,
                      cv2.LINE_AA)
    elif e == "contempt":
        cv2.line(img, (cx - mw // 2, my + int(r * .04)), (cx + mw, my - int(r * .1)), dark,
                 t + 1, cv2.LINE_AA)
    else:  # neutral
        cv2.line(img, (cx - mw // 1, my), (cx + mw, my), dark, t + 1, cv2.LINE_AA)


def emoji_char(label: str) -> str:
    """The Unicode emoji of an emotion (for UI text)."""
    try:
        return EMOJI[canonical(label)]
    except (FerError, KeyError):
        return ""
