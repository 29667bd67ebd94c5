"""Evaluation: predictions -> metrics, confusion matrix, calibration, galleries and exports.
UI-free (numpy, scikit-learn, TensorFlow/Keras, Pillow). What the network sees (feature maps,
Grad-CAM) is :mod:`fer_core.explain`.

Main entry points
-----------------
- :func:`evaluate(model_or_path, dataset, split=None, tta=False) <evaluate>` -> JSON-serialisable
  report dict (``return_predictions=True`` returns ``(report, Predictions)``).
- :func:`predict_proba` (through :class:`fer_core.model.FerModel`), :func:`metrics` (from
  labels + probabilities).
- Calibration: :func:`calibrate` fits temperature scaling on a split and decides the flip-TTA
  default with :func:`paired_bootstrap`; :func:`write_calibration` stores it with the model.
- Galleries: :func:`confusion_cell`, :func:`confident_mistakes`, :func:`random_sample`,
  :func:`gallery_items`.
- Export / comparison: :func:`metrics_to_csv`, :func:`confusion_png`, :func:`compare`.

A model whose label set differs from the data's is never evaluated silently: a coarser model
(merged6 on fer7 data) gets the data remapped explicitly (``report["remapped"] == "fer7->merged6"``),
a finer model (fer7 on merged6 data) gets its probabilities folded into the data's set, and a
mismatch that cannot be mapped raises :class:`FerError`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass

import numpy as np

from fer_core import labels as labelsets
from fer_core import vision
from fer_core.errors import FerError
from fer_core.model import BUCKETS, FerModel, apply_temperature

N_BINS = 15


# --------------------------------------------------------------------------------------------
# Model and inference
# --------------------------------------------------------------------------------------------

def load(model_or_path, labels=None) -> FerModel:
    """The :class:`FerModel` of a FerModel, keras.Model, run dir, .keras file or run id (None:
    ``FER_MODEL`` or the shipped model): :meth:`FerModel.of`."""
    return FerModel.of(model_or_path, labels=labels)


def model_batch(model, images: np.ndarray) -> np.ndarray:
    """float32 input for ``model`` (N, 48, 48[, 1], as its input rank wants) from grey faces."""
    x = vision.as_face_batch(images, where="images")
    return x if len(model.inputs[0].shape) == 4 else x[..., 0]


def predict_proba(model, images: np.ndarray, batch_size: int = BUCKETS[-1],
                  tta: bool = False) -> np.ndarray:
    """Class probabilities float32 (N, C) for uint8 faces (N, 48, 48): see
    :meth:`FerModel.predict_proba` (calibrated when the model has a calibration.json)."""
    return load(model).predict_proba(images, tta=tta, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def _f(x) -> float:
    return float(round(float(x), 6))


def calibration(y_true, probs, n_bins: int = N_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error and reliability bins over the top-1 confidence.

    Bin b holds confidences in (b/n, (b+1)/n] (the first bin also holds 0). ECE is the
    count-weighted mean of |accuracy - confidence| over the bins.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins, ece, n = [], 0.0, max(len(y_true), 1)
    for b in range(n_bins):
        m = idx == b
        count = int(m.sum())
        c = float(conf[m].mean()) if count else None
        a = float(correct[m].mean()) if count else None
        if count:
            ece += count / n * abs(a - c)
        bins.append({"lo": _f(b / n_bins), "hi": _f((b + 1) / n_bins),
                     "confidence": None if c is None else _f(c),
                     "accuracy": None if a is None else _f(a), "count": count})
    return _f(ece), bins


def second_guess_rate(y_true, probs) -> float:
    """Of the wrong answers, the share where the true label was the runner-up (0 if none)."""
    y_true = np.asarray(y_true)
    order = np.argsort(-np.asarray(probs), axis=1, kind="stable")
    wrong = order[:, 0] != y_true
    if not wrong.any():
        return 0.0
    return _f((order[wrong, 1] == y_true[wrong]).mean())


def metrics(y_true, probs, label_names) -> dict:
    """All headline and per-class metrics for true labels and predicted probabilities.

    Macro-F1 follows scikit-learn's default: the mean over labels present in the truth or the
    predictions (a class neither in the split nor ever predicted does not drag it down).
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = [str(n) for n in label_names]
    c = len(names)
    if probs.ndim != 2 or probs.shape[1] != c or len(probs) != len(y_true):
        raise FerError(f"probabilities {probs.shape} do not match {len(y_true)} labels and "
                       f"{c} classes", where="metrics")
    if len(y_true) == 0:
        raise FerError("no faces to evaluate", where="metrics")
    if y_true.min() < 0 or y_true.max() >= c:
        raise FerError(f"labels outside 0..{c - 1}", where="metrics")
    y_pred = probs.argmax(axis=1)
    order = np.argsort(-probs, axis=1, kind="stable")
    top2 = (order[:, :2] == y_true[:, None]).any(axis=1).mean() if c > 1 else 1.0
    everything = list(range(c))
    p, r, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=everything,
                                                        zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=everything)
    rows = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    ece, bins = calibration(y_true, probs)
    pred_counts = np.bincount(y_pred, minlength=c)
    return {
        "n": int(len(y_true)),
        "labels": names,
        "accuracy": _f((y_pred == y_true).mean()),
        "top2_accuracy": _f(top2),
        "macro_f1": _f(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {n: {"precision": _f(p[i]), "recall": _f(r[i]), "f1": _f(f1[i]),
                          "support": int(support[i])} for i, n in enumerate(names)},
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": [[_f(v) for v in row] for row in cm_norm],
        "ece": ece,
        "reliability": bins,
        "second_guess_rate": second_guess_rate(y_true, probs),
        "n_wrong": int((y_pred != y_true).sum()),
        "true_vs_pred": {n: {"true": int(support[i]), "pred": int(pred_counts[i])}
                         for i, n in enumerate(names)},
    }


# --------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------

@dataclass
class Predictions:
    """Per-face results of :func:`evaluate` (for galleries); rows follow the evaluated split."""

    images: np.ndarray        # uint8 (N, 48, 48)
    y_true: np.ndarray        # int64 (N,)
    probs: np.ndarray         # float32 (N, C)
    label_names: tuple[str, ...]
    index: np.ndarray         # row of each face in the dataset given to evaluate()

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def default_split(dataset) -> str:
    """"test" if the data has it, else "val"; FerError if it has neither."""
    splits = dataset.splits
    for s in ("test", "val"):
        if s in splits:
            return s
    raise FerError(f"the data has no test or val split (it has {splits}); choose a split "
                   "explicitly (train or all)", where="split")


def align_labels(fm: FerModel, dataset):
    """Bring model and data to one label set; returns (dataset, fold_scores, remapped).

    ``fold_scores`` is None or a (source, target) pair for :func:`fer_core.labels.remap_scores`.
    Raises FerError when the two cannot be mapped.
    """
    data_names = tuple(dataset.label_names)
    if tuple(fm.labels) == data_names:
        return dataset, None, None
    msg = (f"the model predicts {list(fm.labels)} but the data is labelled "
           f"{list(data_names)}")
    known = set(labelsets.LABEL_SETS)
    if fm.label_set not in known or dataset.label_set not in known:
        raise FerError(msg + "; no mapping between these label sets is known", where=fm.name)
    try:
        if len(fm.labels) <= len(data_names):   # coarser (or equal) model: remap the data
            return (dataset.remap(fm.label_set), None,
                    f"{dataset.label_set}->{fm.label_set}")
        labelsets.remap_table(fm.label_set, dataset.label_set)   # finer model: fold scores
        return (dataset, (fm.label_set, dataset.label_set),
                f"{fm.label_set}->{dataset.label_set} (model outputs folded)")
    except FerError as e:
        raise FerError(f"{msg}; they cannot be mapped ({e})", where=fm.name) from None


def evaluate(model_or_path, dataset, split: str | None = None, tta: bool = False,
             return_predictions: bool = False, batch_size: int = BUCKETS[-1], labels=None,
             progress=None):
    """Evaluate a model (FerModel, keras.Model, run dir or .keras file) on one split.

    Returns the :func:`metrics` dict of the calibrated probabilities plus ``split``, ``model``,
    ``data``, ``tta``, ``remapped`` (None or e.g. "fer7->merged6"), ``timing``,
    ``temperature`` and ``uncalibrated`` (``ece`` and ``reliability`` of the raw
    probabilities); with ``tta=True`` also ``accuracy_no_tta`` / ``macro_f1_no_tta`` /
    ``tta_gain``. With ``return_predictions=True`` returns ``(report, Predictions)``.
    ``split`` defaults to test if present, else val; "all" = every row.
    ``progress(done, total)`` is called as faces are classified.
    """
    fm = load(model_or_path, labels=labels)
    split = split or default_split(dataset)
    ds, fold, remapped = align_labels(fm, dataset)
    index = np.flatnonzero(ds.mask(split))
    if len(index) == 0:
        raise FerError(f"the data has no faces in split {split!r} (it has {dataset.splits})",
                       where="split")
    images, y_true = ds.images[index], ds.labels[index]
    t0 = time.perf_counter()
    plain, mirrored = fm.forward(images, tta=tta, batch_size=batch_size, progress=progress)
    t_pred = time.perf_counter() - t0
    raw = fm.finish(plain, mirrored, calibrated=False)
    temperature = fm.calibration.for_tta(bool(tta))
    probs = apply_temperature(raw, temperature)
    if fold is not None:
        raw, probs, plain = (labelsets.remap_scores(a, *fold) for a in (raw, probs, plain))
    t1 = time.perf_counter()
    report = metrics(y_true, probs, ds.label_names)
    t_metrics = time.perf_counter() - t1
    ece_raw, bins_raw = calibration(y_true, raw)
    report.update({
        "split": split,
        "model": fm.name,
        "model_labels": list(fm.labels),
        "data": str(getattr(dataset, "source", "")),
        "synthetic_data": bool(getattr(dataset, "synthetic", False)),
        "tta": bool(tta),
        "remapped": remapped,
        "temperature": _f(temperature),
        "calibrated": fm.calibration.fitted,
        "uncalibrated": {"ece": ece_raw, "reliability": bins_raw},
        "timing": {"predict_s": _f(t_pred), "metrics_s": _f(t_metrics),
                   "faces_per_s": _f(len(index) / max(t_pred, 1e-9)),
                   "backend": fm.backend_name},
    })
    if tta:
        base = metrics(y_true, plain, ds.label_names)
        report["accuracy_no_tta"] = base["accuracy"]
        report["macro_f1_no_tta"] = base["macro_f1"]
        report["tta_gain"] = _f(report["accuracy"] - base["accuracy"])
    if return_predictions:
        return report, Predictions(images=images, y_true=y_true,
                                   probs=probs.astype(np.float32),
                                   label_names=tuple(ds.label_names), index=index)
    return report


# --------------------------------------------------------------------------------------------
# Calibration fitting and the TTA decision
# --------------------------------------------------------------------------------------------

def nll(y_true, probs) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(y_true, probs, method: str = "ece") -> float:
    """The temperature T for softmax(log(p) / T) that minimises the ECE (``method="ece"``: a
    log-spaced grid over [0.05, 20], then a finer one around the best) or the NLL
    (``"nll"``, Guo et al. 2017). T never changes which class is on top."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if method == "nll":
        from scipy.optimize import minimize_scalar

        logp = np.log(np.clip(probs, 1e-12, None))

        def loss(log_t):
            z = logp / np.exp(log_t)
            z -= z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            return float((lse - z[np.arange(len(y_true)), y_true]).mean())

        res = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                              options={"xatol": 1e-5})
        return float(np.exp(res.x))
    if method != "ece":
        raise FerError(f"unknown method {method!r}; expected 'ece' or 'nll'", where="method")

    def best(grid):
        eces = [calibration(y_true, apply_temperature(probs, t))[0] for t in grid]
        # equal ECEs: the temperature closest to 1 (the smallest change)
        return min(zip(eces, np.abs(np.log(grid)), grid))[2]

    coarse = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    t = best(coarse)
    step = np.log(coarse[1] / coarse[0])
    fine = np.exp(np.linspace(np.log(t) - step, np.log(t) + step, 81))
    return float(best(np.clip(fine, coarse[0], coarse[-1])))


def paired_bootstrap(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Accuracy difference b - a over the same faces, with a paired bootstrap interval.

    Each resample draws faces with replacement and keeps both answers of a face together.
    Returns ``delta`` (observed), ``lo``/``hi`` (the ``level`` percentile interval),
    ``p_b_better`` (share of resamples where b beats a) and ``n``.
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise FerError(f"expected two equal-length 1-D arrays, got {a.shape} and {b.shape}",
                       where="bootstrap")
    d = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, 1000):
        k = min(1000, n_boot - s)
        means[s:s + k] = d[rng.integers(0, len(d), (k, len(d)))].mean(axis=1)
    q = (1 - level) / 2
    return {"delta": _f(d.mean()), "lo": _f(np.quantile(means, q)),
            "hi": _f(np.quantile(means, 1 - q)), "p_b_better": _f((means > 0).mean()),
            "level": level, "n": int(len(d)), "n_boot": int(n_boot)}


def calibrate(model_or_path, dataset, split: str = "val", n_boot: int = 10_000,
              check_split: str | None = "test", method: str = "ece") -> dict:
    """Fit temperature scaling on ``split`` (FER2013: val = PublicTest) with and without
    flip TTA, and decide the TTA default by a paired bootstrap of accuracy over the same faces
    (on only if the whole interval lies above zero).

    Returns the calibration record (what ``calibration.json`` holds): ``temperature``,
    ``temperature_tta``, ``tta_default``, per setting (``no_tta``, ``tta``) ECE/NLL/accuracy
    before and after, a two-fold cross-fit ECE (fitted on one half, measured on the other),
    ``tta_bootstrap``, and the ECEs on ``check_split`` when the data has it (held out).
    """
    fm = load(model_or_path)
    ds, fold, remapped = align_labels(fm, dataset)
    if fold is not None or remapped:
        raise FerError(f"calibrate on data labelled like the model {list(fm.labels)}; "
                       f"this data is labelled {list(dataset.label_names)}", where="data")
    idx = np.flatnonzero(ds.mask(split))
    if len(idx) < 100:
        raise FerError(f"split {split!r} has {len(idx)} faces; calibration needs at least 100",
                       where="split")
    y = ds.labels[idx]
    plain, mirrored = fm.forward(ds.images[idx], tta=True)
    record = {"split": split, "n": int(len(idx)), "data": str(getattr(ds, "source", "")),
              "model": fm.name, "method": method, "bins": N_BINS}
    if fm.path is not None:
        from fer_core.model_files import file_sha256
        record["model_sha256"] = file_sha256(fm.path)
    held = np.flatnonzero(ds.mask(check_split)) if check_split and check_split in ds.splits \
        else np.empty(0, int)
    held_pair = fm.forward(ds.images[held], tta=True) if len(held) else None
    halves = np.array_split(np.random.default_rng(0).permutation(len(idx)), 2)
    for key, tta in (("no_tta", False), ("tta", True)):
        raw = fm.finish(plain, mirrored if tta else None, calibrated=False)
        t = fit_temperature(y, raw, method)
        cal = apply_temperature(raw, t)
        entry = {"temperature": _f(t), "accuracy": _f((raw.argmax(1) == y).mean()),
                 "accuracy_after": _f((cal.argmax(1) == y).mean()),
                 "ece_before": calibration(y, raw)[0], "ece_after": calibration(y, cal)[0],
                 "nll_before": _f(nll(y, raw)), "nll_after": _f(nll(y, cal))}
        # two-fold cross-fit: fitted on one half of the split, measured on the other
        cross = [calibration(y[b], apply_temperature(raw[b], fit_temperature(y[a], raw[a],
                                                                             method)))[0]
                 for a, b in (halves, halves[::-1])]
        entry["ece_after_cross_fit"] = _f(np.mean(cross))
        if held_pair is not None:
            hraw = fm.finish(held_pair[0], held_pair[1] if tta else None, calibrated=False)
            hy = ds.labels[held]
            entry[check_split] = {"n": int(len(held)), "ece_before": calibration(hy, hraw)[0],
                                  "ece_after": calibration(hy, apply_temperature(hraw, t))[0]}
        record[key] = entry
    record["temperature"] = record["no_tta"]["temperature"]
    record["temperature_tta"] = record["tta"]["temperature"]
    boot = paired_bootstrap(fm.finish(plain, None).argmax(1) == y,
                            fm.finish(plain, mirrored).argmax(1) == y, n_boot=n_boot)
    record["tta_bootstrap"] = boot
    record["tta_default"] = bool(boot["lo"] > 0)
    return record


def write_calibration(model_path, record: dict):
    """Store ``record`` as the model's calibration file (atomic, under the run's writer lock);
    returns its path."""
    from fer_core import atomic, runs
    from fer_core.model_files import calibration_file

    f = calibration_file(model_path)
    with runs.model_lock(model_path, "calibrate"):
        atomic.write_text(f, json.dumps(record, indent=2) + "\n")
    return f


# --------------------------------------------------------------------------------------------
# Galleries
# --------------------------------------------------------------------------------------------

def confusion_cell(y_true, y_pred, true_index: int, pred_index: int,
                   limit: int | None = None) -> np.ndarray:
    """Indices of faces with true label ``true_index`` predicted as ``pred_index``."""
    idx = np.flatnonzero((np.asarray(y_true) == true_index) & (np.asarray(y_pred) == pred_index))
    return idx if limit is None else idx[:limit]


def confident_mistakes(y_true, probs, k: int = 16) -> np.ndarray:
    """Indices of the ``k`` wrong predictions made with the highest confidence, most first."""
    probs = np.asarray(probs)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != np.asarray(y_true))
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")[:k]]


def random_sample(n: int, k: int = 16, seed: int | None = 0) -> np.ndarray:
    """``k`` distinct random indices out of ``n`` (sorted)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def gallery_items(preds: Predictions, indices) -> list[dict]:
    """Display records: image, true/pred label, confidence and all probabilities."""
    items = []
    for i in np.asarray(indices, dtype=int).tolist():
        p = preds.probs[i]
        j = int(p.argmax())
        items.append({"index": i, "row": int(preds.index[i]), "image": preds.images[i],
                      "true": preds.label_names[int(preds.y_true[i])],
                      "pred": preds.label_names[j], "confidence": float(p[j]),
                      "correct": j == int(preds.y_true[i]),
                      "probs": {n: float(v) for n, v in zip(preds.label_names, p)}})
    return items


# --------------------------------------------------------------------------------------------
# Export and comparison
# --------------------------------------------------------------------------------------------

def report_json(report: dict) -> str:
    """The report as JSON text (for downloads)."""
    return json.dumps(report, indent=2)


def metrics_to_csv(report: dict) -> str:
    """Per-class table as CSV: label, precision, recall, f1, support (+ a macro row)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["label", "precision", "recall", "f1", "support"])
    for name in report["labels"]:
        m = report["per_class"][name]
        w.writerow([name, m["precision"], m["recall"], m["f1"], m["support"]])
    pcs = [report["per_class"][n] for n in report["labels"]]
    w.writerow(["macro avg", _f(np.mean([m["precision"] for m in pcs])),
                _f(np.mean([m["recall"] for m in pcs])), report["macro_f1"], report["n"]])
    w.writerow(["accuracy", "", "", report["accuracy"], report["n"]])
    return out.getvalue()


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def confusion_png(report: dict, normalized: bool = False, cell: int = 64) -> bytes:
    """The confusion matrix as a labelled heatmap PNG (rows: true, columns: predicted)."""
    from PIL import Image, ImageDraw

    names = report["labels"]
    counts = np.asarray(report["confusion_matrix"], dtype=float)
    norm = np.asarray(report["confusion_matrix_normalized"], dtype=float)
    c = len(names)
    font, small, title_font = _font(14), _font(12), _font(16)
    left, top = 110, 90
    w, h = left + c * cell + 20, top + c * cell + 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    title = f"Confusion matrix ({'row-normalised' if normalized else 'counts'})"
    sub = f"{report.get('model', '')} on {report.get('split', '')}, n={report.get('n', '')}"
    d.text((10, 8), title, fill="black", font=title_font)
    d.text((10, 30), sub, fill=(80, 80, 80), font=small)
    d.text((left + c * cell / 2, top - 22), "predicted", fill="black", font=font, anchor="mm")
    for j, n in enumerate(names):
        d.text((left + j * cell + cell / 2, top - 8), n[:9], fill="black", font=small,
               anchor="ms")
    d.text((10, top + c * cell + 20), "rows: true label", fill="black", font=small)
    for i, n in enumerate(names):
        d.text((left - 8, top + i * cell + cell / 2), n[:12], fill="black", font=font,
               anchor="rm")
        for j in range(c):
            v = norm[i, j]   # colour always by row share so rows are comparable
            shade = (int(247 - v * 239), int(251 - v * 203), int(255 - v * 148))
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=shade,
                        outline=(200, 200, 200))
            text = f"{v:.2f}" if normalized else f"{int(counts[i, j])}"
            d.text((x0 + cell / 2, y0 + cell / 2), text, font=font, anchor="mm",
                   fill="white" if v > 0.5 else "black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


HEADLINE = ("accuracy", "top2_accuracy", "macro_f1", "ece", "second_guess_rate")


def compare(report_a: dict, report_b: dict) -> dict:
    """Deltas b - a: headline metrics and per-class precision/recall/f1 on shared labels."""
    headline = {}
    for k in HEADLINE:
        a, b = report_a.get(k), report_b.get(k)
        if a is not None and b is not None:
            headline[k] = {"a": a, "b": b, "delta": _f(b - a)}
    shared = [n for n in report_a["labels"] if n in report_b["labels"]]
    per_class = {}
    for n in shared:
        pa, pb = report_a["per_class"][n], report_b["per_class"][n]
        per_class[n] = {m: {"a": pa[m], "b": pb[m], "delta": _f(pb[m] - pa[m])}
                        for m in ("precision", "recall", "f1")}
    return {"a": report_a.get("model"), "b": report_b.get("model"), "headline": headline,
            "per_class": per_class, "labels": shared,
            "labels_differ": list(report_a["labels"]) != list(report_b["labels"]),
            "same_data": (report_a.get("data"), report_a.get("split"), report_a.get("n")) ==
                         (report_b.get("data"), report_b.get("split"), report_b.get("n"))}
