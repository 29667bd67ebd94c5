"""``python -m fer_core evaluate [--model M] --data DATA [--split S] [--tta] [--json]``."""

from __future__ import annotations

from fer_core.resolve import add_model_argument, resolve_model


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class metrics, confusion "
                                        "matrix and calibration of a model on a split")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_argument(p)
    p.add_argument("--data", required=True,
                   help='dataset: "demo", a CSV/.csv.gz/.zip or an image folder')
    p.add_argument("--split", choices=("test", "val", "train", "all"), default=None,
                   help="split to evaluate (default: test if the data has it, else val)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average with horizontally flipped faces")
    p.set_defaults(func=run)


def format_report(r: dict) -> str:
    names = r["labels"]
    lines = [f"model {r['model']} on {r['data']} [{r['split']}], {r['n']} faces"
             + (" (synthetic demo data)" if r.get("synthetic_data") else "")]
    if r.get("remapped"):
        lines.append(f"labels remapped: {r['remapped']}")
    tta = ""
    if r.get("tta"):
        tta = f"  (TTA; without: {r['accuracy_no_tta']:.4f}, gain {r['tta_gain']:+.4f})"
    lines += [f"accuracy        {r['accuracy']:.4f}{tta}",
              f"top-2 accuracy  {r['top2_accuracy']:.4f}",
              f"macro F1        {r['macro_f1']:.4f}",
              f"ECE (15 bins)   {r['ece']:.4f}",
              f"second guess    {r['second_guess_rate']:.4f} of {r['n_wrong']} wrong answers",
              "",
              f"{'class':10s} {'precision':>9s} {'recall':>7s} {'f1':>7s} {'support':>8s} "
              f"{'predicted':>9s}"]
    for n in names:
        m = r["per_class"][n]
        lines.append(f"{n:10s} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:7.3f} "
                     f"{m['support']:8d} {r['true_vs_pred'][n]['pred']:9d}")
    w = max(9, max(len(str(v)) for row in r["confusion_matrix"] for v in row) + 1)
    lines += ["", "confusion matrix (rows true, columns predicted)",
              " " * 10 + "".join(f"{n[:w - 1]:>{w}s}" for n in names)]
    for n, row in zip(names, r["confusion_matrix"]):
        lines.append(f"{n:10s}" + "".join(f"{v:>{w}d}" for v in row))
    t = r["timing"]
    lines.append(f"\npredicted in {t['predict_s']:.2f} s ({t['faces_per_s']:.0f} faces/s)")
    return "\n".join(lines)


def run(args) -> int:
    from fer_core import data, evaluation
    from fer_core.cli import emit

    model = resolve_model(args.model, where="--model")
    ds = data.load(args.data)
    report = evaluation.evaluate(model, ds, split=args.split, tta=args.tta)
    emit(args, report, format_report(report))
    return 0
