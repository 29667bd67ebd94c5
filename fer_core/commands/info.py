"""``python -m fer_core info DATA``: counts per split and class, and flagged images."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="counts per split and class, flagged images")
    p.add_argument("data", help='dataset: "demo", a CSV/.csv.gz/.zip or an image folder')
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-cache", action="store_true", help="parse again, ignore the cache")
    p.add_argument("--lenient", action="store_true", help="skip bad rows instead of stopping")
    p.add_argument("--fer2013", metavar="PATH",
                   help="for a FER+ vote file: the matching FER2013 CSV")
    p.add_argument("--mode", choices=("majority", "votes"), default=None,
                   help="for a FER+ vote file: majority label or vote distribution")
    p.set_defaults(func=run)


def run(args) -> int:
    from fer_core import data
    from fer_core.cli import emit
    from fer_core.data import stats

    options = {k: v for k, v in (("fer2013", getattr(args, "fer2013", None)),
                                 ("mode", getattr(args, "mode", None))) if v is not None}
    ds = data.load(args.data, cache=not args.no_cache, strict=not args.lenient, **options)
    flags = stats.flagged(ds)
    summary = flags.summary()
    payload = {"source": ds.source, "synthetic": ds.synthetic, "n": len(ds),
               "label_set": ds.label_set, "labels": list(ds.label_names),
               "splits": ds.counts(), "flagged": summary,
               "blank_examples": flags.blank[:20].tolist(),
               "cross_split_examples": flags.cross_split_groups[:20],
               "skipped": [{"where": w, "reason": r} for w, r in ds.skipped]}
    synthetic = " (synthetic demo)" if ds.synthetic and "synthetic" not in ds.source else ""
    lines = [f"{ds.source}: {len(ds)} faces{synthetic}"]
    for split, c in payload["splits"].items():
        per = ", ".join(f"{k} {v}" for k, v in c["per_class"].items())
        lines.append(f"  {split:5s} {c['total']:6d}  {per}")
    lines.append(f"  flagged: {summary['blank']} blank/near-constant, "
                 f"{summary['duplicates_across_splits']} duplicate group(s) across splits "
                 f"(leakage), {summary['duplicates_within_splits']} within a split")
    if ds.skipped:
        lines.append(f"  skipped {len(ds.skipped)} bad row(s), first: {ds.skipped[0]}")
    emit(args, payload, "\n".join(lines))
    return 0
