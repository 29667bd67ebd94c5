"""``python -m fer_core export RUN --format onnx|tflite|saved_model [--int8] [--out FILE]``.

Converts a run (or .keras file) for another runtime and checks its parity against Keras (see
:mod:`fer_core.export`); ``--data`` takes the faces of that dataset's validation split (FER2013
PublicTest), else random faces. Prints the record (also written to ``<out>.json``). Needs
``fer-studio[train]``.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, TFLite or a SavedModel "
                                      "(parity checked against Keras)")
    p.add_argument("run", metavar="RUN", help="run directory or .keras file")
    p.add_argument("--format", required=True, choices=("onnx", "tflite", "saved_model"))
    p.add_argument("--int8", action="store_true",
                   help="int8 quantisation (tflite), calibrated on training faces of --data")
    p.add_argument("--out", default=None,
                   help="output file (folder for saved_model; default: beside the model)")
    p.add_argument("--data", default=None,
                   help="dataset for the parity check (its val split; FER2013: PublicTest) "
                        "and int8 calibration (default: random faces, no accuracy)")
    p.add_argument("--split", default=None, help="split of --data to check on (default val)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core.cli import emit
    from fer_core.export import export

    rec = export(args.run, args.format, args.out, int8=args.int8, data=args.data,
                 split=args.split)
    p = rec["parity"]
    text = (f"wrote {rec['file']} ({rec['format']}{', int8' if rec['int8'] else ''}, "
            f"{rec['bytes'] / 1e6:.1f} MB) in {rec['seconds']} s\n"
            f"parity on {p['faces']} faces of {p['faces_from']}: top class agrees "
            f"{p['top1_agreement']:.2%}, probabilities within {p['max_prob_diff']:.2g}")
    if "keras_accuracy" in p:
        text += (f"\naccuracy {p['keras_accuracy']:.2f} % (Keras) -> "
                 f"{p['exported_accuracy']:.2f} % ({-p['accuracy_loss_points']:+.2f} points)")
    emit(args, rec, text)
    return 0
