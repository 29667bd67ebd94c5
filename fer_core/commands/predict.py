"""``python -m fer_core predict IMAGE... [--model M] [--json] [--out DIR]``: emotions per face.

JSON (``--json``) for ONE image is an object, ``{"image": path, "faces": [{"box": [x, y, w, h],
"emotion", "confidence", "scores": {label: p}, "top_k": [[label, p], ...]}], "model_id",
"labels", "tta"}``, so ``faces`` is a top-level key; for SEVERAL images it is a list of
``{"image", "faces"}`` objects in argument order. Faces are listed largest first. With
``--out DIR`` an annotated copy of each image is written to ``DIR/<name>.annotated.png`` (its
path is added as ``"annotated"``). Every image is decoded before anything is printed: a missing
or bad image stops with an error naming it (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.detectors import add_argument
from fer_core.resolve import add_model_argument, resolve_model


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="emotions of the faces in images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, webp, ...)")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--out", default=None, help="write annotated copies into this folder")
    p.add_argument("--no-detect", action="store_true",
                   help="each image already is a face crop (no face detection)")
    p.add_argument("--top-k", type=int, default=3, help="best labels to list per face (default 3)")
    p.add_argument("--tta", action="store_true", default=None,
                   help="average each face with its mirror image (flip test-time augmentation: "
                        "twice the classification time; default: the model's calibration.json "
                        "decides, off without one)")
    p.add_argument("--mode", choices=("box", "emoji"), default="box",
                   help="overlay of the annotated copies (default box)")
    p.add_argument("--max-side", type=int, default=None,
                   help="downscale larger images to this side for detection (default 640)")
    p.add_argument("--min-size", type=int, default=None,
                   help="smallest face side in pixels (default 30)")
    p.add_argument("--no-align", action="store_true",
                   help="do not rotate faces so the eyes are level")
    add_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core.cli import emit
    from fer_core.errors import FerError

    if args.top_k < 1:
        raise FerError(f"must be >= 1, got {args.top_k}", where="--top-k")
    paths = [Path(os.path.expanduser(p)) for p in args.images]
    for p in paths:  # fail fast, before loading TensorFlow
        if not p.is_file():
            raise FerError("no such image file" if not p.exists() else "not a file", where=str(p))
    out_dir = None
    if args.out:
        out_dir = Path(os.path.expanduser(args.out))
        if out_dir.exists() and not out_dir.is_dir():
            raise FerError("exists and is not a folder", where=str(out_dir))

    from fer_core import atomic, vision
    from fer_core.drawing import annotate
    from fer_core.predict import Predictor

    changes = {k: v for k, v in (("max_side", args.max_side), ("min_size", args.min_size))
               if v is not None}
    cfg = vision.DetectorConfig.preset("photo", args.detector, **changes)
    vision.FaceDetector(cfg)  # unknown detector / missing package: before the model loads
    images = [(p, vision.decode_image(p)) for p in paths]  # every image checked first
    predictor = Predictor(resolve_model(args.model, where="--model"), detector_config=cfg,
                          tta=args.tta, align=not args.no_align)

    results, lines = [], []
    for p, img in images:
        faces = predictor.predict_image(img, detect=not args.no_detect, top_k=args.top_k)
        item = {"image": str(p), "faces": [f.to_dict() for f in faces]}
        if out_dir is not None:
            import cv2
            out_dir.mkdir(parents=True, exist_ok=True)
            dest = out_dir / f"{p.stem}.annotated.png"
            ok, buf = cv2.imencode(".png", annotate(img, faces, mode=args.mode))
            if not ok:
                raise FerError("could not encode the annotated image", where=str(dest))
            atomic.write_bytes(dest, buf.tobytes())
            item["annotated"] = str(dest)
        results.append(item)
        if not faces:
            lines.append(f"{p}: no face found")
        for i, f in enumerate(faces, 1):
            top = ", ".join(f"{k} {v:.0%}" for k, v in f.top_k)
            lines.append(f"{p}: face {i} at {f.box}: {f.emotion} ({top})")
        if "annotated" in item:
            lines.append(f"  annotated copy: {item['annotated']}")
    if len(results) == 1:
        payload = {**results[0], "model_id": predictor.model_id,
                   "labels": list(predictor.labels), "tta": predictor.tta}
    else:
        payload = results
    emit(args, payload, "\n".join(lines))
    return 0
