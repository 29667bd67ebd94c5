"""Evaluation speed: 3,589 faces end to end, feature maps and Grad-CAM for one face.

Targets: evaluating 3,589 faces <= 10 s; feature maps or Grad-CAM for one face <= 1 s each.
Faces: the FER2013 PublicTest rows when the shared copy is present, else demo faces repeated to
3,589. Model: --model, else the shipped default, else the default architecture untrained (fine
for timing; the output says which). The model goes through ``FerModel`` as on every other path
(the first call includes loading it and building its backend); ``backend`` says which ran.
"""

from __future__ import annotations

import os
import statistics
import time

N_FACES = 3589
TARGET_EVAL_S = 10.0
TARGET_ONE_FACE_S = 1.0


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="run directory or .keras file")
    p.add_argument("--data", default=None,
                   help="dataset (default: FER2013 PublicTest if present, else demo faces)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions for the one-face timings")


def _faces(data_arg):
    import numpy as np

    import fer_core
    from fer_core import data
    from fer_core.data.dataset import Dataset

    if data_arg:
        ds = data.load(data_arg)
        split = "test" if "test" in ds.splits else ("val" if "val" in ds.splits else "all")
        return ds, split, f"{ds.source} [{split}]"
    shared = fer_core.ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
    if shared.exists():
        ds = data.load(shared)
        return ds, "val", f"FER2013 PublicTest ({int((ds.split == 'val').sum())} faces)"
    try:
        demo = data.load("demo")
        images, labels, names, lset = demo.images, demo.labels, demo.label_names, demo.label_set
        what = "demo faces"
    except Exception:  # noqa: BLE001 - demo generator not available: timing needs any faces
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (N_FACES, 48, 48), dtype=np.uint8)
        labels = rng.integers(0, 7, N_FACES)
        from fer_core.labels import FER7
        names, lset, what = FER7, "fer7", "random faces"
    reps = -(-N_FACES // len(images))
    ds = Dataset(images=np.concatenate([images] * reps)[:N_FACES],
                 labels=np.concatenate([labels] * reps)[:N_FACES].astype(np.int64),
                 split=np.full(N_FACES, "test", dtype="U5"), label_names=names,
                 source=what, label_set=lset, synthetic=True)
    return ds, "test", f"{what} repeated to {N_FACES}"


def _model(model_arg):
    from fer_core import evaluation
    from fer_core.resolve import configured_model, default_label, resolve_model

    if model_arg:
        return evaluation.load(resolve_model(model_arg, where="--model")), f"{model_arg}"
    default = configured_model()
    if default is not None:
        return evaluation.load(default), default_label(default)
    from fer_core import architectures
    arch = getattr(architectures, "DEFAULT_ARCH", "vgg")
    return evaluation.load(architectures.build(arch)), f"default architecture {arch!r}, untrained"


def _median_time(fn, repeat):
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(args) -> dict:
    from fer_core import evaluation, explain

    ds, split, data_desc = _faces(args.data)
    t = time.perf_counter()
    lm, model_desc = _model(args.model)
    report = evaluation.evaluate(lm, ds, split=split)
    cold = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    evaluation.evaluate(lm, ds, split=split)
    warm, warm_cpu = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    evaluation.evaluate(lm, ds, split=split, tta=True)
    tta = time.perf_counter() - t

    model = lm.model
    face = ds.images[ds.mask(split)][0]
    layers = explain.conv_layers(model)
    fm_layer = layers[len(layers) // 2] if layers else None
    result = {
        "model": model_desc,
        "data": data_desc,
        "faces": report["n"],
        "evaluate_s_first_call": round(cold, 3),
        "evaluate_s": round(warm, 3),
        "evaluate_cpu_s": round(warm_cpu, 3),
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "evaluate_tta_s": round(tta, 3),
        "faces_per_s": round(report["n"] / warm, 1),
        "backend": report["timing"]["backend"],
        "target_evaluate_s": TARGET_EVAL_S,
        "evaluate_ok": cold <= TARGET_EVAL_S,
        "accuracy": report["accuracy"],
    }
    if fm_layer:
        t = time.perf_counter()
        explain.feature_maps(model, face, fm_layer)
        result["feature_maps_layer"] = fm_layer
        result["feature_maps_s_first_call"] = round(time.perf_counter() - t, 4)
        result["feature_maps_s_median"] = round(
            _median_time(lambda: explain.feature_maps(model, face, fm_layer), args.repeat), 4)
        t = time.perf_counter()
        cls = 0
        explain.grad_cam(model, face, cls)
        result["grad_cam_layer"] = explain.last_conv_layer(model)
        result["grad_cam_s_first_call"] = round(time.perf_counter() - t, 4)
        result["grad_cam_s_median"] = round(
            _median_time(lambda: explain.grad_cam(model, face, cls), args.repeat), 4)
        result["target_one_face_s"] = TARGET_ONE_FACE_S
        result["one_face_ok"] = (result["feature_maps_s_first_call"] <= TARGET_ONE_FACE_S
                                 and result["grad_cam_s_first_call"] <= TARGET_ONE_FACE_S)
    return result
