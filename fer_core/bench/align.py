"""Eye alignment on tilted faces: FER2013 PublicTest rotated by 0, +-15 and +-30 degrees,
classified aligned vs not.

Method (the crops are 48x48, too small for a face detector as they are): each face is rotated
about its centre (border replicated), then upscaled 4x (192x192) and placed in the middle of a
grey 384x384 canvas; the detector (``--detector``, default BlazeFace) runs on that canvas and,
when it finds the face, its two eye points give the tilt. *Aligned* rotates the 48x48 crop back
by that tilt (the same :func:`fer_core.vision.crop_faces` rotation as photos, applied to the
whole crop) when it is at least ``MIN_ALIGN_DEGREES``; *not aligned* classifies the rotated crop
as it is. Faces where the detector finds nothing stay unaligned in both columns (the share
found is reported). Accuracy of the model (default: the shipped one) on the same faces, one run,
with a paired bootstrap interval of the gain (:func:`fer_core.evaluation.paired_bootstrap`),
for the product's smallest tilt to correct (``MIN_ALIGN_DEGREES``) and, from the same
detections, for the other smallest tilts of ``MIN_TILTS`` (``by_min_tilt``).

Cost: one detector run per face and angle (the ``photo`` preset without its tiling pass: the
face is alone in the middle of the canvas, tiles would only repeat the work), and the model
classifies each rotated face once, plus once more only the faces alignment changed, in
batches. All 3,589 PublicTest faces by default; ``--sample N`` takes a fixed random subsample
(seed 0), ``--limit N`` the first N.
"""

from __future__ import annotations

import time

import numpy as np

ANGLES = (0, -15, 15, -30, 30)
# Other smallest tilts to rotate back, reported beside vision.MIN_ALIGN_DEGREES (same run:
# only which faces are rotated back differs).
MIN_TILTS = (5.0, 10.0, 15.0)


def add_arguments(p) -> None:
    from fer_core.detectors import add_argument
    p.add_argument("data", nargs="?", default="../shared/data/fer2013/fer2013.csv.gz",
                   help="FER2013 CSV (default ../shared/data/fer2013/fer2013.csv.gz)")
    p.add_argument("--model", default=None, help="run dir or .keras file (default: shipped)")
    p.add_argument("--limit", type=int, default=None, help="first N PublicTest faces only")
    p.add_argument("--sample", type=int, default=None,
                   help="a fixed random subsample of N PublicTest faces (seed 0)")
    add_argument(p)


def _rotate(face: np.ndarray, angle: float) -> np.ndarray:
    import cv2
    h, w = face.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def run(args) -> dict:
    import cv2

    from fer_core import data as fdata
    from fer_core import vision
    from fer_core.errors import FerError
    from fer_core.evaluation import paired_bootstrap
    from fer_core.predict import Predictor

    ds = fdata.load(args.data)
    test = ds.subset("val") if "val" in set(ds.split) else None
    if test is None or not len(test):
        raise FerError("no PublicTest (val) split", where=str(args.data))
    faces, labels = test.images, np.asarray(test.labels)
    if getattr(args, "sample", None) and args.sample < len(faces):
        pick = np.sort(np.random.default_rng(0).choice(len(faces), args.sample, replace=False))
        faces, labels = faces[pick], labels[pick]
    if args.limit:
        faces, labels = faces[:args.limit], labels[:args.limit]
    cfg = vision.DetectorConfig.preset("photo", args.detector, tile=0.0)
    predictor = Predictor(args.model, detector_config=cfg)
    det = predictor.detector
    t0 = time.perf_counter()
    rows = {}
    floors = sorted({float(vision.MIN_ALIGN_DEGREES), *MIN_TILTS})
    for angle in ANGLES:
        plain = np.stack([_rotate(f, angle) for f in faces]) if angle else faces
        tilts = np.full(len(plain), np.nan)
        canvas = np.empty((384, 384), np.uint8)
        for i, f in enumerate(plain):
            canvas.fill(int(np.median(f)))
            canvas[96:288, 96:288] = cv2.resize(f, (192, 192), interpolation=cv2.INTER_CUBIC)
            d = det.detect(canvas)
            if len(d) and d.eyes is not None:
                tilts[i] = vision.eye_angle(d.eyes[0])
        size = np.abs(np.nan_to_num(tilts, nan=0.0))
        turnable = np.nonzero((size >= floors[0]) & (size <= vision.MAX_ALIGN_DEGREES))[0]
        right_plain = predictor.predict_faces(plain).argmax(1) == labels
        right_turned = np.zeros(len(plain), bool)   # classified rotated back, where turnable
        if len(turnable):
            turned = np.stack([_rotate(plain[i], tilts[i]) for i in turnable])
            right_turned[turnable] = predictor.predict_faces(turned).argmax(1) == labels[turnable]
        by_floor = {}
        for floor in floors:
            changed = (size >= floor) & (size <= vision.MAX_ALIGN_DEGREES)
            right_aligned = np.where(changed, right_turned, right_plain)
            boot = paired_bootstrap(right_plain, right_aligned, n_boot=2000)
            by_floor[floor] = {"aligned": round(float(right_aligned.mean()), 4),
                               "gain_points": round(100 * boot["delta"], 2),
                               "gain_95": [round(100 * boot["lo"], 2),
                                           round(100 * boot["hi"], 2)],
                               "rotated_back": round(float(changed.mean()), 3)}
        main = by_floor[float(vision.MIN_ALIGN_DEGREES)]
        rows[f"{angle:+d}"] = {"not_aligned": round(float(right_plain.mean()), 4), **main,
                               "eyes_found": round(float(np.isfinite(tilts).mean()), 3),
                               "by_min_tilt": {f"{k:g}": v for k, v in by_floor.items()
                                               if k != float(vision.MIN_ALIGN_DEGREES)}}
    return {"faces": int(len(faces)), "split": "PublicTest (val)",
            "detector": det.config.kind, "model_id": predictor.model_id,
            "accuracy": rows, "seconds": round(time.perf_counter() - t0, 1)}
