"""Face detectors side by side: faces found vs expected, false boxes, ms per 640x480 frame.

For each registered detector (``--detector`` for one; Haar is the baseline):

* **real photos** (``--faces``, default ``../shared/data/faces``; skipped when absent): with the
  ``photo`` preset, how many of the single-face portraits get exactly one box, the boxes on the
  couple and on the seven-person selfie, boxes beyond the expected count (false or doubled) and
  faces missed; ms per photo. A box count alone cannot tell a true face from an invented box
  (5 boxes on a 7-face photo may be 3 true + 2 invented), so with a **truth file** (``--truth``,
  default ``boxes.csv`` in the photos' folder when present: ``file,cx,cy,size`` per face a
  person marks, in the photo's pixels) the photos it lists are matched face by face: a box is
  true when its centre lies within half a face of a marked face's centre not yet taken, any
  other box is invented (``selfie_true_faces`` / ``selfie_invented_boxes``). The truth file is
  not in this repository (it describes the photos, which may not be copied here).
* **generated frames** (always): 640x480 webcam-like frames the bench draws
  (:func:`fer_core.synthetic.synthetic_frame`): a face of 70-220 px moving across the frame (faces
  partly outside included) and frames without a face, detected with the ``video`` preset.
  Found = a box whose centre lies within half a face of the drawn face's centre; any other box
  is false.
* **speed**: median ms to detect on one 640x480 frame with the ``realtime`` and ``photo``
  presets (detection only; ``bench predict`` times detection + classification), the detectors
  timed in turn within each repeat (so a busy machine slows them alike), with each detector's
  ratio to Haar's median of the same run.

``--learn`` also sweeps each CNN detector's score threshold from 0.30 to 0.90 on the photos and
frames (boxes found once with a low threshold, then filtered by score) and prints, per
threshold, misses + extra boxes; the learned threshold is the middle of the widest run of
thresholds with the fewest errors (``fer_core.vision.SCORE_THRESHOLDS`` holds the values
learned here); on the photos the truth file lists, errors are missed + invented faces. Timings
are wall-clock on a possibly busy machine: compare the ratios of one run. ``table`` prints the
figures side by side, Haar first (the baseline).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

DEFAULT_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
TARGETS = {"portraits_exactly_one": 59, "couple": 2, "selfie_true_faces": 6,
           "selfie_invented_boxes": 0}


def add_arguments(p) -> None:
    from fer_core.detectors import add_argument
    add_argument(p)
    p.add_argument("--faces", default=None,
                   help="folder of real photos with faces.csv (default ../shared/data/faces)")
    p.add_argument("--truth", default=None,
                   help="CSV file,cx,cy,size of the faces a person marks in some photos "
                        "(default: boxes.csv in the photos' folder, when present)")
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


def _truth(path: Path | None) -> dict:
    """file -> [(cx, cy, size)] from a truth CSV (empty without one)."""
    out: dict = {}
    if path is None or not path.is_file():
        return out
    from fer_core.errors import FerError
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                face = (float(row["cx"]), float(row["cy"]), float(row["size"]))
            except (KeyError, TypeError, ValueError):
                raise FerError("expected columns file,cx,cy,size with numbers",
                               where=f"{path}:{i}") from None
            out.setdefault(row["file"], []).append(face)
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


def _interleaved_ms(fns: dict, repeat: int) -> dict:
    """Median ms per call of each of ``fns`` (name -> callable), timed in turn within each
    repeat so that load from other work falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


def _photo_counts(found, th, photos, truth):
    """Counts on the real photos at score threshold ``th``: ``found`` Detections per photo."""
    counts = [int((d.scores >= th).sum()) for d in found]
    expected = [n for _, n, _ in photos]
    portraits = [c for c, n in zip(counts, expected) if n == 1]
    res = {"portraits_exactly_one": f"{sum(c == 1 for c in portraits)}/{len(portraits)}",
           "portraits_extra_boxes": int(sum(max(0, c - 1) for c in portraits)),
           "portraits_missed": int(sum(c == 0 for c in portraits))}
    for key, stem in (("couple", "couple"), ("selfie", "selfie")):
        hit = [(c, d, f) for c, d, (f, _, _) in zip(counts, found, photos) if f.startswith(stem)]
        if not hit:
            continue
        c, d, f = hit[0]
        res[f"{key}_boxes"] = c
        if f in truth:
            true, false = _match(d.boxes[d.scores >= th], truth[f])
            res[f"{key}_true_faces"], res[f"{key}_invented_boxes"] = true, false
    res["extra_boxes"] = int(sum(max(0, c - n) for c, n in zip(counts, expected)))
    res["missed_faces"] = int(sum(max(0, n - c) for c, n in zip(counts, expected)))
    return res


def _learn(found_photos, photos, truth, scores_frames, truths):
    """errors(th) = misses + extra boxes (on photos the truth file lists: misses + invented
    boxes), photos + frames; the middle of the widest run of thresholds with the fewest."""
    ths = np.round(np.arange(0.30, 0.901, 0.05), 2)
    rows = []
    for th in ths:
        err = 0
        for d, (f, n, _) in zip(found_photos, photos):
            keep = d.scores >= th
            if f in truth:
                true, false = _match(d.boxes[keep], truth[f])
                err += (len(truth[f]) - true) + false
            else:
                err += abs(int(keep.sum()) - n)
        for (boxes, s), t in zip(scores_frames, truths):
            found, false = _match(boxes[s >= th], t)
            err += (len(t) - found) + false
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


TABLE_ROWS = (  # (label, key in a detector's row)
    ("portraits with exactly one box", "portraits_exactly_one"),
    ("portraits: extra boxes / missed", ("portraits_extra_boxes", "portraits_missed")),
    ("couple: boxes", "couple_boxes"),
    ("couple: true / invented", ("couple_true_faces", "couple_invented_boxes")),
    ("selfie: boxes", "selfie_boxes"),
    ("selfie: true / invented", ("selfie_true_faces", "selfie_invented_boxes")),
    ("generated frames: found / false", ("frames_found", "frames_false_boxes")),
    ("ms per photo (mean)", "ms_per_photo"),
    ("ms per 640x480, realtime (x Haar)", ("ms_640x480_realtime", "realtime_vs_haar")),
    ("ms per 640x480, photo (x Haar)", ("ms_640x480_photo", "photo_vs_haar")),
)


def _table(rows: dict) -> str:
    """The figures side by side (a Markdown table), Haar first as the baseline."""
    names = sorted(rows, key=lambda n: n != "haar")
    out = ["| | " + " | ".join(f"{n} (baseline)" if n == "haar" else n for n in names) + " |",
           "|---" * (len(names) + 1) + "|"]
    for label, key in TABLE_ROWS:
        cells = []
        for n in names:
            keys = key if isinstance(key, tuple) else (key,)
            vals = [rows[n].get(k) for k in keys]
            cells.append(" / ".join("-" if v is None else str(v) for v in vals))
        if any(c.strip("-/ ") for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def run(args) -> dict:
    from dataclasses import replace

    from fer_core import detectors, vision
    from fer_core.synthetic import synthetic_frame
    names = [detectors.check_name(args.detector)] if args.detector else list(detectors.DETECTORS)
    folder = Path(os.path.expanduser(args.faces)) if args.faces else DEFAULT_FACES
    photos = _photos(folder)
    truth_path = (Path(os.path.expanduser(args.truth)) if getattr(args, "truth", None)
                  else folder / "boxes.csv")
    truth = _truth(truth_path) if photos else {}
    frames = _frames()
    frame = synthetic_frame(640, 480, face_size=160)
    result: dict = {"photos": str(folder) if photos else f"skipped: no {folder}/faces.csv",
                    "truth": (f"{truth_path}: {sum(map(len, truth.values()))} faces marked in "
                              f"{', '.join(sorted(truth))}" if truth else
                              "none: selfie and couple counted as boxes only"),
                    "frames": f"{len(frames)} generated 640x480 frames "
                              f"({sum(len(t) for _, t in frames)} faces)",
                    "targets": TARGETS, "detectors": {}}
    rows: dict = {n: {} for n in names}
    photo_dets, video_dets = {}, {}
    for name in names:
        photo_cfg = vision.DetectorConfig.preset("photo", name)
        video_cfg = vision.DetectorConfig.preset("video", name)
        if args.learn and name != "haar":  # boxes once with a low threshold; filtered later
            photo_cfg = replace(photo_cfg, score_threshold=0.3)
            video_cfg = replace(video_cfg, score_threshold=0.3)
        photo_dets[name] = vision.FaceDetector(photo_cfg)
        video_dets[name] = vision.FaceDetector(video_cfg)
    found_photos: dict = {n: [] for n in names}
    if photos:
        spent = dict.fromkeys(names, 0.0)
        for _, _, img in photos:   # detectors in turn on each photo (fair under load)
            for name in names:
                t0 = time.perf_counter()
                found_photos[name].append(photo_dets[name].detect(img))
                spent[name] += time.perf_counter() - t0
        for name in names:
            th = vision.DetectorConfig.preset("photo", name).threshold
            rows[name]["ms_per_photo"] = round(spent[name] * 1000 / len(photos), 1)
            rows[name].update(_photo_counts(found_photos[name], th, photos, truth))
    for name in names:
        row = rows[name]
        got = [video_dets[name].detect(f) for f, _ in frames]
        th = vision.DetectorConfig.preset("video", name).threshold
        tot_found = tot_false = 0
        for d, (_, t) in zip(got, frames):
            f_, x_ = _match(d.boxes[d.scores >= th], t)
            tot_found += f_
            tot_false += x_
        row["frames_found"] = f"{tot_found}/{sum(len(t) for _, t in frames)}"
        row["frames_false_boxes"] = tot_false
        if args.learn and name != "haar":
            row["learn"] = _learn(found_photos[name], photos or [], truth,
                                  [(d.boxes, d.scores) for d in got], [t for _, t in frames])
    for preset in ("realtime", "photo"):
        dets = {n: vision.FaceDetector(vision.DetectorConfig.preset(preset, n)) for n in names}
        ms = _interleaved_ms({n: (lambda d=d: d.detect(frame)) for n, d in dets.items()},
                             args.repeat)
        for n in names:
            rows[n][f"ms_640x480_{preset}"] = ms[n]
            if "haar" in ms:
                rows[n][f"{preset}_vs_haar"] = round(ms[n] / ms["haar"], 2)
    result["detectors"] = rows
    result["table"] = _table(rows)
    try:
        result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return result
