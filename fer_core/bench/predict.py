"""Live prediction speed: a 640x480 frame with one face, detect + classify (medians, p90).

Targets on a 2-core CPU: frame (detect + classify) median <= 10 ms, one face classification
<= 2 ms; ``fer_package_baseline_frame_ms`` is the ``fer`` package's pipeline (Haar on the full
frame + its TFLite model) on the same frame, for scale. The detector runs with the Webcam page's
preset (``DetectorConfig.preset("realtime")``) unless ``--max-side``/``--min-size`` say
otherwise. ``tracked_frame_ms`` is a frame between two full
detections in the webcam (search only around the known face). Timings are wall-clock on a machine
that may be busy: ``load_average`` and the CPU time per call (``cpu_ms_median``, this process,
all threads; less sensitive to other load) are reported alongside.
"""

from __future__ import annotations

import os
import time

import numpy as np

TARGETS = {"frame_ms_median": 10.0, "face_ms_median": 2.0}


def add_arguments(p) -> None:
    p.add_argument("--image", default=None,
                   help="a photo to use instead of the drawn 640x480 frame with one face")
    p.add_argument("--model", default=None, help="run dir or .keras file (default: the shipped "
                   "model, else an untrained default-architecture model)")
    p.add_argument("--repeat", type=int, default=200, help="timed runs per measure (default 200)")
    p.add_argument("--max-side", type=int, default=None,
                   help="detector downscale (default: the realtime preset's)")
    p.add_argument("--min-size", type=int, default=None,
                   help="smallest face px (default: the realtime preset's)")
    p.add_argument("--backend", choices=("auto", "tflite", "keras"), default="auto")
    from fer_core.detectors import add_argument
    add_argument(p)
    p.add_argument("--tta", action="store_true", default=None,
                   help="flip test-time augmentation (each face with its mirror image, as "
                        "predict --tta and FER_TTA=1; default: the model's)")


_CPU: dict[str, float] = {}


def _timed(fn, repeat: int, name: str | None = None) -> np.ndarray:
    """Wall-clock ms per call; the median CPU ms (this process) goes to ``_CPU[name]``."""
    for _ in range(3):
        fn()
    out = np.empty(repeat)
    cpu = np.empty(repeat)
    for i in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
        cpu[i] = time.process_time() - c0
    if name:
        _CPU[name] = round(float(np.median(cpu)) * 1000.0, 3)
    return out * 1000.0


def _model(requested):
    """A path, or an in-memory untrained model (not cached on disk) when nothing is shipped."""
    from fer_core.resolve import DEFAULT_MODEL, configured_model, default_label, resolve_model
    if requested:
        return str(resolve_model(requested, where="--model")), f"given: {requested}"
    default = configured_model()
    if default is not None:
        return str(default), default_label(default)
    try:
        from fer_core import architectures
        arch = architectures.DEFAULT_ARCH
        model = architectures.build(arch, n_classes=7)
    except ImportError:  # pragma: no cover - architectures.py is part of the project
        import keras
        arch = "tiny"
        inp = keras.Input((48, 48, 1))
        x = keras.layers.Rescaling(1 / 255)(inp)
        x = keras.layers.Conv2D(16, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))
    return model, (f"UNTRAINED '{arch}' architecture ({DEFAULT_MODEL}/model.keras is missing); "
                   "same speed as a trained one")


def run(args) -> dict:
    from fer_core import synthetic, vision
    from fer_core.errors import FerError
    from fer_core.predict import Predictor
    from fer_core.webcam import FrameAnnotator

    if args.repeat < 5:
        raise FerError(f"must be >= 5, got {args.repeat}", where="--repeat")
    changes = {k: v for k, v in (("max_side", args.max_side), ("min_size", args.min_size))
               if v is not None}
    cfg = vision.DetectorConfig.preset("realtime", getattr(args, "detector", None), **changes)
    if args.image:
        frame = vision.to_bgr(vision.decode_image(args.image))
        source = args.image
    else:
        frame = synthetic.synthetic_frame(640, 480, face_size=160)
        source = "drawn 640x480 frame, one 160 px face (synthetic.synthetic_frame)"

    model, model_desc = _model(args.model)
    t0 = time.perf_counter()
    predictor = Predictor(model, detector_config=cfg, backend=args.backend, tta=args.tta)
    load_s = time.perf_counter() - t0

    found = predictor.detect(frame)
    faces = predictor.crops(frame, found.select(slice(0, 1))) if len(found) else \
        vision.whole_image_face(frame)
    one = faces[:1]
    face_ms = _timed(lambda: predictor.predict_faces(one), args.repeat, "face")
    batch8 = np.repeat(one, 8, axis=0)
    batch_ms = _timed(lambda: predictor.predict_faces(batch8), max(5, args.repeat // 4))
    detect_ms = _timed(lambda: predictor.detect(frame), args.repeat, "detect")
    frame_ms = _timed(lambda: predictor.predict_image(frame), args.repeat, "frame")
    near = found.boxes[:1]
    tracked_ms = _timed(lambda: predictor.predict_boxes(frame, predictor.detect(frame, near=near))
                        if len(near) else predictor.predict_image(frame), args.repeat, "tracked")
    # the fer package's detection step, same frame, same moment: full-frame Haar, scale 1.1,
    # 5 neighbours, faces >= 50 px (its defaults)
    fer_style = vision.FaceDetector(vision.DetectorConfig(kind="haar",
                                                          max_side=max(frame.shape[:2]),
                                                          min_size=50))
    fer_ms = _timed(lambda: fer_style.detect(frame), max(5, args.repeat // 4), "fer_style_detect")
    annot = FrameAnnotator(predictor, smoothing=0.5, detect_every=3, show_fps=True)
    annot_ms = _timed(lambda: annot(frame), args.repeat)

    def r(a, q=50):
        return round(float(np.percentile(a, q)), 3)

    try:
        load_avg = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load_avg = None
    result = {
        "frame_ms_median": r(frame_ms), "frame_ms_p90": r(frame_ms, 90),
        "face_ms_median": r(face_ms), "face_ms_p90": r(face_ms, 90),
        "detect_ms_median": r(detect_ms), "detect_ms_p90": r(detect_ms, 90),
        "tracked_frame_ms_median": r(tracked_ms),
        "webcam_annotator_ms_median": r(annot_ms),
        "batch8_ms_median": r(batch_ms),
        "cpu_ms_median": {f"{k}_ms": v for k, v in _CPU.items()},
        "faces_found": int(len(found)),
        "targets": TARGETS,
        "meets_targets": bool(r(frame_ms) <= TARGETS["frame_ms_median"]
                              and r(face_ms) <= TARGETS["face_ms_median"]),
        "fer_package_baseline_frame_ms": 22.0,
        "fer_style_detect_ms_median": r(fer_ms),
        "model": model_desc, "model_id": predictor.model_id,
        "backend": predictor.backend_name, "tta": predictor.tta, "model_load_s": round(load_s, 2),
        "detector": cfg.to_dict(), "image": source,
        "frame_shape": list(frame.shape), "repeat": args.repeat,
        "cpu_count": os.cpu_count(), "load_average": load_avg,
    }
    return result
