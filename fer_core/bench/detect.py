"""Face detectors side by side: faces found vs expected, false boxes, ms per 640x480 frame.

For each registered detector (``--detector`` for one; Haar is the baseline):

* **real photos** (``--faces``, default ``../shared/data/faces``; skipped when absent): with the
  ``photo`` preset, how many of the single-face portraits get exactly one box, the boxes on the
  couple and on the seven-person selfie, boxes beyond the expected count (false or doubled) and
  faces missed; ms per photo.
* **generated frames** (always): 640x480 webcam-like frames the bench draws
  (:func:`fer_core.synthetic.synthetic_frame`): a face of 70-220 px moving across the frame (faces
  partly outside included) and frames without a face, detected with the ``video`` preset.
  Found = a box whose centre lies within half a face of the drawn face's centre; any other box
  is false.
* **speed**: median ms to detect on one 640x480 frame with the ``realtime`` and ``photo``
  presets (detection only; ``bench predict`` times detection + classification).

``--learn`` also sweeps each CNN detector's score threshold from 0.30 to 0.90 on the photos and
frames (boxes found once with a low threshold, then filtered by score) and prints, per
threshold, misses + extra boxes; the learned threshold is the middle of the widest run of
thresholds with the fewest errors (``fer_core.vision.SCORE_THRESHOLDS`` holds the values
learned here). Timings are wall-clock on a possibly busy machine: compare the rows of one run.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

DEFAULT_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
TARGETS = {"portraits_exactly_one": 59, "couple": 2, "selfie_true_faces": 6,
           "selfie_false_boxes": 0}


def add_arguments(p) -> None:
    from fer_core.detectors import add_argument
    add_argument(p)
    p.add_argument("--faces", default=None,
                   help="folder of real photos with faces.csv (default ../shared/data/faces)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per speed measure")
    p.add_argument("--learn", action="store_true",
                   help="sweep the score threshold of the CNN detectors (see module doc)")


def _photos(folder: Path):
    table = folder / "faces.csv"
    if not table.is_file():
        return None
    from fer_core import vision
    out = []
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            out.append((row["file"], int(row["faces"]),
                        vision.to_bgr(vision.decode_image(folder / row["file"]))))
    return out


def _frames():
    """(frame, [(cx, cy, size)]) generated: a moving face of several sizes, and empty frames."""
    from fer_core.synthetic import synthetic_frame
    out = []
    for k, size in enumerate((70, 100, 140, 180, 220)):
        for j in range(6):
            cx = int(80 + j * 96)
            cy = 240 + int(60 * np.sin(j + k))
            out.append((synthetic_frame(640, 480, face_size=size, centre=(cx, cy),
                                               smile=(j % 2 == 0), seed=k * 10 + j),
                        [(cx, cy, size)]))
    for j in range(6):
        out.append((synthetic_frame(640, 480, face_size=8, centre=(-100, -100),
                                           seed=100 + j), []))
    return out


def _match(boxes, truth):
    """(found, false) of boxes against drawn faces [(cx, cy, size)]."""
    used, false = set(), 0
    for x, y, w, h in boxes:
        cx, cy = x + w / 2, y + h / 2
        hit = next((i for i, (tx, ty, s) in enumerate(truth)
                    if i not in used and abs(cx - tx) < 0.5 * s and abs(cy - ty) < 0.5 * s),
                   None)
        if hit is None:
            false += 1
        else:
            used.add(hit)
    return len(used), false


def _median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 2)


def _photo_counts(counts, expected, names):
    portraits = [c for c, n in zip(counts, expected) if n == 1]
    res = {"portraits_exactly_one": f"{sum(c == 1 for c in portraits)}/{len(portraits)}",
           "portraits_extra_boxes": int(sum(max(0, c - 1) for c in portraits)),
           "portraits_missed": int(sum(c == 0 for c in portraits))}
    for key, stem in (("couple", "couple"), ("selfie", "selfie")):
        got = [c for c, n in zip(counts, names) if n.startswith(stem)]
        if got:
            res[f"{key}_boxes"] = int(got[0])
    res["extra_boxes"] = int(sum(max(0, c - n) for c, n in zip(counts, expected)))
    res["missed_faces"] = int(sum(max(0, n - c) for c, n in zip(counts, expected)))
    return res


def _learn(scores_photos, expected, scores_frames, truths):
    """errors(th) = misses + extra boxes, photos + frames; the middle of the best run."""
    ths = np.round(np.arange(0.30, 0.901, 0.05), 2)
    rows = []
    for th in ths:
        counts = [int((s >= th).sum()) for s in scores_photos]
        err = sum(abs(c - n) for c, n in zip(counts, expected))
        for (boxes, s), truth in zip(scores_frames, truths):
            found, false = _match(boxes[s >= th], truth)
            err += (len(truth) - found) + false
        rows.append((float(th), int(err)))
    best = min(e for _, e in rows)
    run, runs = [], []
    for th, e in rows:
        if e == best:
            run.append(th)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    widest = max(runs, key=len)
    return {"errors_by_threshold": {f"{th:.2f}": e for th, e in rows},
            "fewest_errors": best, "learned_threshold": round(widest[len(widest) // 2], 2)}


def run(args) -> dict:
    from dataclasses import replace

    from fer_core import detectors, vision
    from fer_core.synthetic import synthetic_frame
    names = [detectors.check_name(args.detector)] if args.detector else list(detectors.DETECTORS)
    folder = Path(os.path.expanduser(args.faces)) if args.faces else DEFAULT_FACES
    photos = _photos(folder)
    frames = _frames()
    frame = synthetic_frame(640, 480, face_size=160)
    result: dict = {"photos": str(folder) if photos else f"skipped: no {folder}/faces.csv",
                    "frames": f"{len(frames)} generated 640x480 frames "
                              f"({sum(len(t) for _, t in frames)} faces)",
                    "targets": TARGETS, "detectors": {}}
    for name in names:
        row: dict = {}
        photo_cfg = vision.DetectorConfig.preset("photo", name)
        video_cfg = vision.DetectorConfig.preset("video", name)
        learn = args.learn and name != "haar"
        if learn:  # boxes once with a low threshold; filtered by score afterwards
            photo_cfg = replace(photo_cfg, score_threshold=0.3)
            video_cfg = replace(video_cfg, score_threshold=0.3)
        pdet, vdet = vision.FaceDetector(photo_cfg), vision.FaceDetector(video_cfg)
        scores_photos = []
        if photos:
            t0 = time.perf_counter()
            found = [pdet.detect(img) for _, _, img in photos]
            row["ms_per_photo"] = round((time.perf_counter() - t0) * 1000 / len(photos), 1)
            th = vision.DetectorConfig.preset("photo", name).threshold
            counts = [int((d.scores >= th).sum()) for d in found]
            row.update(_photo_counts(counts, [n for _, n, _ in photos],
                                     [f for f, _, _ in photos]))
            scores_photos = [d.scores for d in found]
        got = [vdet.detect(f) for f, _ in frames]
        th = vision.DetectorConfig.preset("video", name).threshold
        tot_found = tot_false = 0
        for d, (_, truth) in zip(got, frames):
            f_, x_ = _match(d.boxes[d.scores >= th], truth)
            tot_found += f_
            tot_false += x_
        row["frames_found"] = f"{tot_found}/{sum(len(t) for _, t in frames)}"
        row["frames_false_boxes"] = tot_false
        for preset in ("realtime", "photo"):
            det = vision.FaceDetector(vision.DetectorConfig.preset(preset, name))
            row[f"ms_640x480_{preset}"] = _median_ms(lambda: det.detect(frame), args.repeat)
        if learn:
            row["learn"] = _learn(scores_photos, [n for _, n, _ in photos] if photos else [],
                                  [(d.boxes, d.scores) for d in got], [t for _, t in frames])
        result["detectors"][name] = row
    try:
        result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return result
