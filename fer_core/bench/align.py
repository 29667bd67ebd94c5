"""Eye alignment on tilted faces: FER2013 PublicTest rotated by 0, +-15 and +-30 degrees,
classified aligned vs not.

Method (the crops are 48x48, too small for a face detector as they are): each face is rotated
about its centre (border replicated), then upscaled 4x (192x192) and placed in the middle of a
grey 384x384 canvas; the detector (``--detector``, default BlazeFace) runs on that canvas and,
when it finds the face, its two eye points give the tilt. *Aligned* rotates the 48x48 crop back
by that tilt (the same :func:`fer_core.vision.crop_faces` rotation as photos, applied to the
whole crop) when it is at least ``MIN_ALIGN_DEGREES``; *not aligned* classifies the rotated crop
as it is. Faces where the detector finds nothing stay unaligned in both columns (the share
found is reported). Accuracy of the model (default: the shipped one) on the same faces, one run.
"""

from __future__ import annotations

import time

import numpy as np

ANGLES = (0, -15, 15, -30, 30)


def add_arguments(p) -> None:
    from fer_core.detectors import add_argument
    p.add_argument("data", nargs="?", default="../shared/data/fer2013/fer2013.csv.gz",
                   help="FER2013 CSV (default ../shared/data/fer2013/fer2013.csv.gz)")
    p.add_argument("--model", default=None, help="run dir or .keras file (default: shipped)")
    p.add_argument("--limit", type=int, default=None, help="first N PublicTest faces only")
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
    from fer_core.predict import Predictor

    ds = fdata.load(args.data)
    test = ds.subset("val") if "val" in set(ds.split) else None
    if test is None or not len(test):
        raise FerError("no PublicTest (val) split", where=str(args.data))
    faces, labels = test.images, np.asarray(test.labels)
    if args.limit:
        faces, labels = faces[:args.limit], labels[:args.limit]
    predictor = Predictor(args.model, detector_config=vision.DetectorConfig.preset(
        "photo", args.detector))
    det = predictor.detector
    t0 = time.perf_counter()
    rows = {}
    for angle in ANGLES:
        plain = np.stack([_rotate(f, angle) for f in faces]) if angle else faces
        aligned = plain.copy()
        found = 0
        for i, f in enumerate(plain):
            canvas = np.full((384, 384), int(np.median(f)), np.uint8)
            canvas[96:288, 96:288] = cv2.resize(f, (192, 192), interpolation=cv2.INTER_CUBIC)
            d = det.detect(canvas)
            if not len(d) or d.eyes is None:
                continue
            found += 1
            tilt = vision.eye_angle(d.eyes[0])
            if vision.MIN_ALIGN_DEGREES <= abs(tilt) <= vision.MAX_ALIGN_DEGREES:
                aligned[i] = _rotate(f, tilt)
        acc_plain = float((predictor.predict_faces(plain).argmax(1) == labels).mean())
        acc_aligned = float((predictor.predict_faces(aligned).argmax(1) == labels).mean())
        rows[f"{angle:+d}"] = {"not_aligned": round(acc_plain, 4),
                               "aligned": round(acc_aligned, 4),
                               "gain_points": round(100 * (acc_aligned - acc_plain), 2),
                               "eyes_found": round(found / len(plain), 3)}
    return {"faces": int(len(faces)), "split": "PublicTest (val)",
            "detector": det.config.kind, "model_id": predictor.model_id,
            "accuracy": rows, "seconds": round(time.perf_counter() - t0, 1)}
