"""Side-by-side comparison of a candidate model with the current one, on the same faces.

:func:`compare_models` classifies each set of faces (the original val split, the test split
when there is one, the feedback hold-out) with both models and reports, per set: accuracy of
each with the difference and its paired bootstrap interval (:func:`fer_core.evaluation.
paired_bootstrap`, as ``calibrate`` decides flip TTA), the same per class (recall on that
class's faces), and the calibration error (ECE) of each. The ``verdict`` lists, in words,
where the candidate is worse or better:

* worse: an accuracy (a set, or a class with at least :data:`MIN_CLASS_FACES` faces) whose whole
  interval lies below zero, or an ECE higher by more than :data:`ECE_MARGIN`;
* better: an accuracy whose whole interval lies above zero.

The record is the run's ``comparison.json`` (:func:`write`, :func:`read`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fer_core.errors import FerError

COMPARISON_FILE = "comparison.json"
SCHEMA = 1
MIN_CLASS_FACES = 20
ECE_MARGIN = 0.02
SET_NAMES = {"val": "original val split", "test": "original test split",
             "feedback_holdout": "feedback hold-out"}


def _faces(s):
    if isinstance(s, tuple):
        return np.asarray(s[0]), np.asarray(s[1], dtype=np.int64)
    return s.images, s.labels


def _diff(ca: np.ndarray, cb: np.ndarray, n_boot: int) -> dict:
    from fer_core.evaluation import paired_bootstrap
    b = paired_bootstrap(ca, cb, n_boot=n_boot)
    return {"current": round(float(ca.mean()), 6), "candidate": round(float(cb.mean()), 6),
            "delta": b["delta"], "lo": b["lo"], "hi": b["hi"], "p_better": b["p_b_better"],
            "n": b["n"]}


def compare_models(current, candidate, sets: dict, n_boot: int = 2000, focus=()) -> dict:
    """Compare two models (paths or FerModels with the same labels) on ``sets``: name ->
    a Dataset labelled like the models, or ``(faces, label indices)``. ``focus``: the classes
    the feedback was about (listed first on the page)."""
    from fer_core.model import FerModel

    a, b = FerModel.of(current), FerModel.of(candidate)
    if a.labels != b.labels:
        raise FerError(f"the candidate predicts {list(b.labels)}, the current model "
                       f"{list(a.labels)}: not comparable", where="candidate")
    probs = {}
    for name, s in sets.items():
        images, y = _faces(s)
        if len(y):
            probs[name] = (y, a.predict_proba(images, tta=False),
                           b.predict_proba(images, tta=False))
    return compare_probs((a.name, a.model_id), (b.name, b.model_id), a.labels, probs,
                         n_boot=n_boot, focus=focus)


def compare_probs(current: tuple, candidate: tuple, labels, sets: dict, n_boot: int = 2000,
                  focus=()) -> dict:
    """The comparison from probabilities already computed: ``sets`` name -> (label indices,
    current model's probabilities, candidate's); ``current``/``candidate`` are (name, id)."""
    from fer_core.evaluation import calibration

    out = {"schema": SCHEMA, "current": current[0], "current_id": current[1],
           "candidate": candidate[0], "candidate_id": candidate[1], "labels": list(labels),
           "focus": list(focus), "n_boot": n_boot, "sets": {}}
    for name, (y, pa, pb) in sets.items():
        ca, cb = pa.argmax(1) == y, pb.argmax(1) == y
        per_class = {}
        for i, label in enumerate(labels):
            m = y == i
            if m.any():
                per_class[label] = _diff(ca[m], cb[m], n_boot)
        out["sets"][name] = {
            "title": SET_NAMES.get(name, name), "n": int(len(y)),
            "accuracy": _diff(ca, cb, n_boot),
            "ece": {"current": calibration(y, pa)[0], "candidate": calibration(y, pb)[0]},
            "per_class": per_class}
    out["verdict"] = verdict(out)
    return out


def verdict(result: dict) -> dict:
    """``{"worse": [...], "better": [...], "summary": "worse" | "better" | "no clear
    difference" | "mixed"}`` in words a person reads."""
    worse, better = [], []

    def pts(d):
        return (f"{d['delta'] * 100:+.1f} points ({d['current']:.1%} -> {d['candidate']:.1%}, "
                f"95% interval [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}], n={d['n']})")

    for name, s in result["sets"].items():
        title = s["title"]
        acc = s["accuracy"]
        if acc["hi"] < 0:
            worse.append(f"{title}: accuracy {pts(acc)}")
        elif acc["lo"] > 0:
            better.append(f"{title}: accuracy {pts(acc)}")
        for label, d in s["per_class"].items():
            if d["n"] < MIN_CLASS_FACES:
                continue
            if d["hi"] < 0:
                worse.append(f"{title}, {label}: {pts(d)}")
            elif d["lo"] > 0:
                better.append(f"{title}, {label}: {pts(d)}")
        e = s["ece"]
        if e["candidate"] - e["current"] > ECE_MARGIN:
            worse.append(f"{title}: calibration error (ECE) {e['current']:.3f} -> "
                         f"{e['candidate']:.3f}")
    summary = ("mixed" if worse and better else "worse" if worse else
               "better" if better else "no clear difference")
    return {"summary": summary, "worse": worse, "better": better}


def write(run_dir, result: dict) -> Path:
    from fer_core import atomic
    path = Path(run_dir) / COMPARISON_FILE
    atomic.write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def read(run_dir) -> dict | None:
    """The run's comparison record, or None when it has none (FerError when it is corrupt)."""
    p = Path(run_dir)
    path = (p if p.is_dir() else p.parent) / COMPARISON_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FerError("comparison.json is not valid JSON", where=str(path)) from None


def summary_lines(result: dict) -> list[str]:
    """Plain-text lines of a comparison (CLI, bench)."""
    lines = [f"candidate {result['candidate']} vs current {result['current']}: "
             f"{result['verdict']['summary']}"]
    for name, s in result["sets"].items():
        a = s["accuracy"]
        lines.append(f"  {s['title']:22s} n={s['n']:5d}  accuracy {a['current']:.2%} -> "
                     f"{a['candidate']:.2%}  ({a['delta'] * 100:+.2f} points, "
                     f"[{a['lo'] * 100:+.2f}, {a['hi'] * 100:+.2f}])  ECE "
                     f"{s['ece']['current']:.3f} -> {s['ece']['candidate']:.3f}")
        for label in result.get("focus") or []:
            d = s["per_class"].get(label)
            if d:
                lines.append(f"    {label:20s} n={d['n']:5d}  {d['current']:.2%} -> "
                             f"{d['candidate']:.2%}  ({d['delta'] * 100:+.2f} points)")
    for w in result["verdict"]["worse"]:
        lines.append(f"  WORSE: {w}")
    return lines
