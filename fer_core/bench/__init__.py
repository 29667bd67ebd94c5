"""Benchmarks: ``python -m fer_core bench TARGET``. Each target is a module here with
``add_arguments(parser)`` and ``run(args) -> dict`` (printed as JSON with --json, else as a table).
"""

TARGETS = ("data", "train", "evaluate", "predict", "api", "video", "detect", "align",
           "finetune", "metrics", "soak", "runtime")
