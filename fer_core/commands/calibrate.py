"""``python -m fer_core calibrate DATA [--model M] [--split val] [--no-write] [--json]``.

Fits temperature scaling on a split (FER2013: val = PublicTest) with and without flip TTA,
decides the TTA default by a paired bootstrap over the same faces, and stores the result as the
model's ``calibration.json`` (``<name>.calibration.json`` beside a .keras file), which every
path then applies. The JSON output is that record.
"""

from __future__ import annotations

from fer_core.resolve import add_model_argument, resolve_model


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="fit temperature scaling (calibrated probabilities) "
                                         "and the flip-TTA default of a model")
    p.add_argument("data", help='dataset: a CSV/.csv.gz/.zip or an image folder (or "demo")')
    add_model_argument(p)
    p.add_argument("--split", choices=("val", "test", "train", "all"), default="val",
                   help="split to fit on (default val, FER2013 PublicTest)")
    p.add_argument("--bootstrap", type=int, default=10_000,
                   help="bootstrap resamples for the TTA decision (default 10000)")
    p.add_argument("--no-write", action="store_true",
                   help="report only; do not write calibration.json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def format_record(r: dict) -> str:
    b = r["tta_bootstrap"]
    lines = [f"model {r['model']} on {r['data']} [{r['split']}], {r['n']} faces"]
    for key, name in (("no_tta", "single pass"), ("tta", "flip TTA")):
        e = r[key]
        held = next((v for v in e.values() if isinstance(v, dict)), None)
        extra = (f"; held-out ECE {held['ece_before']:.4f} -> {held['ece_after']:.4f} "
                 f"({held['n']} faces)") if held else ""
        lines.append(f"{name:12s} T={e['temperature']:.4f}  accuracy {e['accuracy']:.4f}  "
                     f"ECE {e['ece_before']:.4f} -> {e['ece_after']:.4f}  "
                     f"NLL {e['nll_before']:.4f} -> {e['nll_after']:.4f}{extra}")
    lines.append(f"flip TTA minus single pass: {b['delta']:+.4f} accuracy, "
                 f"{b['level']:.0%} paired-bootstrap interval [{b['lo']:+.4f}, {b['hi']:+.4f}] "
                 f"-> TTA {'on' if r['tta_default'] else 'off'} by default")
    if r.get("written"):
        lines.append(f"written: {r['written']}")
    return "\n".join(lines)


def run(args) -> int:
    from fer_core import runs
    from fer_core.errors import FerError

    if args.bootstrap < 100:
        raise FerError(f"must be >= 100, got {args.bootstrap}", where="--bootstrap")
    model = resolve_model(args.model, where="--model")
    if args.no_write:
        return _calibrate(args, model)
    with runs.model_lock(model, "calibrate"):  # a run being written is refused before the data
        return _calibrate(args, model)


def _calibrate(args, model) -> int:
    from fer_core import data, evaluation
    from fer_core.cli import emit
    from fer_core.errors import FerError

    ds = data.load(args.data)
    if args.split not in ds.splits and args.split != "all":
        raise FerError(f"the data has no {args.split!r} split (it has {ds.splits})",
                       where="--split")
    record = evaluation.calibrate(model, ds, split=args.split, n_boot=args.bootstrap)
    record["data"] = args.data
    if not args.no_write:
        record["written"] = str(evaluation.write_calibration(model, record))
    emit(args, record, format_record(record))
    return 0
