"""Training speed: images/s of a short timed training on generated faces (warm-up excluded).

Also times the input pipeline alone (shuffle, batch, augment, prefetch) over the same batches:
``pipeline_ratio`` = pipeline images/s / model images/s should be well above 1 (>= 0.9 means the
pipeline is not the bottleneck). ``--all`` measures every architecture.
"""

from __future__ import annotations

import json
import time


def add_arguments(p) -> None:
    p.add_argument("--arch", default=None, help="architecture (default: the default arch)")
    p.add_argument("--all", action="store_true", help="every architecture, as a table")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture parameter (JSON value)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")


def measure(arch: str, params: dict | None = None, batch_size: int = 64, steps: int = 30,
            warmup: int = 5) -> dict:
    """Time ``steps`` training steps of ``arch`` and the input pipeline alone."""
    import keras
    import numpy as np

    from fer_core import architectures
    from fer_core.training import TrainConfig, make_augmenter, make_dataset, make_optimizer

    config = TrainConfig(arch=arch, arch_params=dict(params or {}), batch_size=batch_size)
    config.validate()
    n = batch_size * (steps + warmup)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    targets = np.eye(7, dtype=np.float32)[rng.integers(0, 7, size=n)]
    keras.utils.set_random_seed(0)
    augmenter = make_augmenter(config)
    ds = make_dataset(images, targets, batch_size, training=True, augmenter=augmenter)

    # input pipeline alone
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    pipe_sec = time.perf_counter() - t0

    model = architectures.build(arch, n_classes=7, **config.arch_params)
    model.compile(optimizer=make_optimizer(config, steps + warmup),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    stamps = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    timed = stamps[warmup - 1:] if warmup >= 1 else stamps
    step_sec = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    ips = batch_size / step_sec
    pipe_ips = batch_size * steps / pipe_sec
    return {"arch": arch, "params": int(model.count_params()),
            "mflops_per_image": round(architectures.count_flops(model) / 1e6, 1),
            "batch_size": batch_size, "steps": len(timed) - 1,
            "images_per_sec": round(ips, 1), "step_ms": round(step_sec * 1000, 1),
            "input_pipeline_images_per_sec": round(pipe_ips, 1),
            "pipeline_ratio": round(pipe_ips / ips, 2),
            "fer2013_epoch_min": round(28709 / ips / 60, 1)}


def run(args) -> dict:
    from fer_core import architectures
    from fer_core.errors import FerError

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise FerError(f"expected KEY=VALUE, got {item!r}", where="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    if args.all:
        rows = [measure(a, None, args.batch_size, args.steps, args.warmup)
                for a in architectures.ARCHITECTURES]
        return {"architectures": rows} if args.json else {
            r["arch"]: (f"{r['images_per_sec']:7.1f} img/s  {r['step_ms']:7.1f} ms/step  "
                        f"pipeline {r['input_pipeline_images_per_sec']:8.1f} img/s  "
                        f"{r['params']:>9,} params  {r['mflops_per_image']:6.1f} MFLOPs  "
                        f"FER2013 epoch {r['fer2013_epoch_min']} min") for r in rows}
    return measure(args.arch or architectures.DEFAULT_ARCH, params, args.batch_size, args.steps,
                   args.warmup)
