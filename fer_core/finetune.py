"""Fine-tuning from feedback: the corrections in the feedback store become a candidate model.

    spec = finetune_spec(base="models/fer2013-default", feedback_db="data/feedback.sqlite3")
    handle = JobRunner(runs_dir()).start("finetune", spec, run_dir)     # a child process
    finetune(base, feedback, replay_dataset, run_dir)                   # or in this process

What happens (:func:`finetune`):

1. The feedback rows are split once, stratified by label with a fixed seed, into a training
   part and a **hold-out** (``holdout``, default 20 %) that is never trained on. The split is
   written to the run (``feedback_split.json``), so a resumed job trains on the same rows.
2. A **replay** sample of the base model's original training data joins them:
   ``replay`` faces per feedback face (default :data:`DEFAULT_REPLAY` = 8), drawn per class in
   proportion, never a face that is also in the feedback (same pixels). Why 8: on the FER2013
   bench (400 fear faces the shipped model calls sad, head mode, lr 1e-4, epoch chosen on
   PublicTest) 4, 8 and 16 replay faces per correction gave PublicTest -0.05, +0.03 and
   +0.00 points and hold-out fear +15, +20 and +24 points; 8 is as safe as 16 for half the
   feature extraction (see README, "Closing the loop").
3. ``mode="head"`` (the default): the base model's features stay as they are (BatchNorm
   statistics included) and only its last Dense layer is retrained on the features of those
   faces, from its current weights, for ``epochs`` (20) at ``lr`` (1e-3), keeping the epoch
   with the best accuracy on the original val split (FER2013: PublicTest). Seconds of compute
   after one pass of feature extraction, and the rest of the model cannot forget anything.
   ``mode="full"``: the base model's own recipe (``config.json``) is trained from its weights
   (``init_from``) for a few epochs at a small learning rate, without warm-up, SWA,
   distillation or MixUp, an ordinary training run (same events, checkpoints, stop, resume);
   on FER2013 one such epoch at lr 1e-4 cost the shipped model 3 points of PublicTest.
4. The candidate's temperature is fitted on that val split (``calibration.json``) and it is
   compared with the base model on the same faces (:mod:`fer_core.compare`):
   ``comparison.json`` in the run directory.

Bad input raises :class:`FerError`: no feedback, labels the base model does not have, a base
model without a recipe (``config.json``), replay data in another label set.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from fer_core import ROOT, runs
from fer_core.errors import FerError
from fer_core.job_events import Done, Log, Metric, eta
from fer_core.labels import canonical
from fer_core.resolve import resolve_model

DEFAULT_REPLAY = 8.0        # replay faces per feedback training face
DEFAULT_HOLDOUT = 0.2       # share of the feedback never trained on
MODES = ("head", "full")
DEFAULT_MODE = "head"
DEFAULT_EPOCHS = {"head": 10, "full": 4}
DEFAULT_LR = {"head": 1e-4, "full": 1e-4}
SPLIT_FILE = "feedback_split.json"
FINETUNE_FILE = "finetune.json"

# what fine-tuning changes in the base model's recipe
RECIPE_OVERRIDES = dict(warmup_epochs=0.0, swa_epochs=0, teachers=[], distill=0.0, mixup=0.0,
                        cutmix=0.0, patience=0, tensorboard=False, schedule="cosine")


def finetune_spec(base, feedback_db, *, data: str = "", replay: float = DEFAULT_REPLAY,
                  holdout: float = DEFAULT_HOLDOUT, mode: str = DEFAULT_MODE,
                  epochs: int | None = None, lr: float | None = None, seed: int = 0,
                  n_boot: int = 2000, resume: bool = False, command: str = "") -> dict:
    """The spec of a "finetune" job (JSON values only), checked now; ``base`` is resolved by
    :func:`fer_core.resolve.resolve_model` (a run id, run dir or .keras file; None: FER_MODEL
    or the shipped model); ``epochs`` and ``lr`` default by ``mode``."""
    if mode not in MODES:
        raise FerError(f"expected one of {MODES}, got {mode!r}", where="mode")
    spec = {"base": str(resolve_model(base, where="base")), "feedback_db": str(feedback_db), "data": str(data or ""),
            "replay": float(replay), "holdout": float(holdout), "mode": mode,
            "epochs": int(epochs or DEFAULT_EPOCHS[mode]),
            "lr": float(lr or DEFAULT_LR[mode]), "seed": int(seed), "n_boot": int(n_boot),
            "resume": bool(resume), "command": command}
    check_spec(spec)
    return spec


def check_spec(spec: dict) -> None:
    if not runs.has_model(spec["base"]):
        raise FerError("no model there (expected a run directory with model.keras or a "
                       ".keras file)", where=f"base: {spec['base']}", status=404)
    if not 0 <= spec["replay"] <= 100:
        raise FerError(f"must be between 0 and 100 replay faces per feedback face, got "
                       f"{spec['replay']}", where="replay")
    if not 0.05 <= spec["holdout"] <= 0.8:
        raise FerError(f"must be between 0.05 and 0.8, got {spec['holdout']}", where="holdout")
    if not 1 <= spec["epochs"] <= 1000:
        raise FerError(f"must be between 1 and 1000, got {spec['epochs']}", where="epochs")
    if not 0 < spec["lr"] <= 1:
        raise FerError(f"must be > 0 and <= 1, got {spec['lr']}", where="lr")
    if spec["n_boot"] < 100:
        raise FerError(f"must be >= 100, got {spec['n_boot']}", where="n_boot")


# ---------------------------------------------------------------------------- the pieces

def base_recipe(base) -> dict:
    """The base model's training config (``config.json`` of its run directory)."""
    p = Path(base)
    f = (p if p.is_dir() else p.parent) / "config.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FerError("the base model has no readable config.json (its architecture and "
                       "recipe); fine-tuning starts from a run directory made by training",
                       where=f"base: {base}") from None


def replay_source(base, data: str = "") -> str:
    """``data``, else the dataset the base model was trained on (its metrics.json)."""
    if data:
        return data
    try:
        source = runs.read_metrics(base).get("data", {}).get("source")
    except FerError:
        source = None
    if source and source != "synthetic demo":
        p = Path(source)
        p = p if p.is_absolute() else ROOT / p
        if p.exists():
            return str(p)
    elif source == "synthetic demo":
        return "demo"
    raise FerError("the base model's training data is not known or not here; pass the replay "
                   "data (--data, a FER2013 CSV or \"demo\")", where="data")


def feedback_labels(labels: list[str], model_labels) -> np.ndarray:
    """Feedback label names -> indices of the model's labels; FerError listing the unknown."""
    index = {canonical(n): i for i, n in enumerate(model_labels)}
    out, unknown = [], {}
    for name in labels:
        try:
            i = index.get(canonical(name))
        except FerError:
            i = None
        if i is None:
            unknown[name] = unknown.get(name, 0) + 1
        out.append(-1 if i is None else i)
    if unknown:
        listed = ", ".join(f"{k!r} ({v} rows)" for k, v in sorted(unknown.items()))
        raise FerError(f"feedback has labels the model does not have: {listed}; the model "
                       f"predicts {list(model_labels)}", where="feedback")
    return np.asarray(out, dtype=np.int64)


def split_feedback(ids: np.ndarray, y: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """Boolean mask of the hold-out rows: per label, ``holdout`` of its rows (rounded, at
    least one when a label has two or more), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(ids), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = int(round(len(rows) * holdout))
        if len(rows) >= 2:
            k = min(max(k, 1), len(rows) - 1)
        else:
            k = 0
        mask[rng.permutation(rows)[:k]] = True
    return mask


def _digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.blake2b(f.tobytes(), digest_size=16).digest() for f in images}


def replay_sample(dataset, n: int, exclude: np.ndarray, seed: int) -> np.ndarray:
    """Indices of ``n`` training faces of ``dataset``, per class in proportion, none with the
    pixels of a face in ``exclude``."""
    train = np.flatnonzero(dataset.split == "train")
    if n <= 0 or not len(train):
        return np.zeros(0, dtype=np.int64)
    banned = _digests(exclude)
    if banned:
        train = np.asarray([i for i in train if hashlib.blake2b(
            dataset.images[i].tobytes(), digest_size=16).digest() not in banned], np.int64)
    if n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    labels = dataset.labels[train]
    picked = []
    for c in np.unique(labels):
        rows = train[labels == c]
        k = int(round(n * len(rows) / len(train)))
        picked.append(rng.permutation(rows)[:k])
    return np.sort(np.concatenate(picked))


def training_set(feedback_faces, feedback_y, replay_ds, replay_idx):
    """The fine-tuning dataset: feedback + replay as "train", the replay data's val (and
    test) split as they are."""
    from dataclasses import replace

    keep = np.flatnonzero(replay_ds.split != "train")
    images = np.concatenate([feedback_faces, replay_ds.images[replay_idx],
                             replay_ds.images[keep]])
    labels = np.concatenate([feedback_y, replay_ds.labels[replay_idx], replay_ds.labels[keep]])
    split = np.concatenate([np.full(len(feedback_y) + len(replay_idx), "train", dtype="U5"),
                            replay_ds.split[keep]])
    return replace(replay_ds, images=images, labels=labels.astype(np.int64), split=split,
                   soft_labels=None, source=f"feedback + replay of {replay_ds.source}")


# ---------------------------------------------------------------------------- the run

def finetune(base, feedback, replay_ds, run_dir, *, replay: float = DEFAULT_REPLAY,
             holdout: float = DEFAULT_HOLDOUT, mode: str = DEFAULT_MODE,
             epochs: int | None = None, lr: float | None = None, seed: int = 0,
             n_boot: int = 2000, callbacks=(), stop_event=None, resume: bool = False,
             command: str = "", emit=None) -> dict:
    """Fine-tune ``base`` on ``feedback`` = (faces uint8 (N,48,48), label names, ids) mixed
    with replay from ``replay_ds``; write the run, its calibration and comparison into
    ``run_dir``. Returns the ``finetune.json`` record (``status``, sizes, time, comparison
    summary). Holds the run's writer lock (:func:`fer_core.runs.run_lock`) throughout."""
    with runs.run_lock(run_dir, "finetune --resume" if resume else "finetune"):
        return _finetune(base, feedback, replay_ds, run_dir, replay=replay, holdout=holdout,
                         mode=mode, epochs=epochs, lr=lr, seed=seed, n_boot=n_boot,
                         callbacks=callbacks, stop_event=stop_event, resume=resume,
                         command=command, emit=emit)


def _finetune(base, feedback, replay_ds, run_dir, *, replay, holdout, mode, epochs, lr, seed,
              n_boot, callbacks, stop_event, resume, command, emit) -> dict:
    from fer_core import compare, evaluation
    from fer_core.model import FerModel
    from fer_core.training.config import TrainConfig
    from fer_core.training.loop import train

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    emit = emit or (lambda e: None)
    if mode not in MODES:
        raise FerError(f"expected one of {MODES}, got {mode!r}", where="mode")
    epochs, lr = int(epochs or DEFAULT_EPOCHS[mode]), float(lr or DEFAULT_LR[mode])
    base_model = FerModel.load(base)
    faces, names, ids = feedback
    if len(ids) == 0:
        raise FerError("there is no feedback to fine-tune on; send corrections to POST "
                       "/v1/feedback first", where="feedback")
    y = feedback_labels(list(names), base_model.labels)
    if tuple(replay_ds.label_names) != tuple(base_model.labels):
        raise FerError(f"the replay data is labelled {list(replay_ds.label_names)}, the model "
                       f"predicts {list(base_model.labels)}", where="data")
    if "val" not in replay_ds.splits:
        raise FerError("the replay data has no val split (needed to choose the epoch and to "
                       "compare)", where="data")
    split_path = run_dir / SPLIT_FILE
    if resume and split_path.exists():
        saved = json.loads(split_path.read_text())
        held_ids = set(saved["holdout_ids"])
        present = set(saved["holdout_ids"]) | set(saved["train_ids"])
        keep = np.asarray([int(i) in present for i in ids], dtype=bool)
        faces, y, ids = faces[keep], y[keep], ids[keep]
        held = np.asarray([int(i) in held_ids for i in ids], dtype=bool)
    else:
        held = split_feedback(ids, y, holdout, seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_json(split_path, {"holdout": holdout, "seed": seed,
                                            "holdout_ids": ids[held].tolist(),
                                            "train_ids": ids[~held].tolist()})
    if not (~held).any():
        raise FerError(f"only {len(ids)} feedback row(s): too few to train on after holding "
                       "out a part; send more corrections", where="feedback")
    n_replay = int(round(replay * int((~held).sum())))
    replay_idx = replay_sample(replay_ds, n_replay, faces, seed)
    ds = training_set(faces[~held], y[~held], replay_ds, replay_idx)
    recipe = {**base_recipe(base), **RECIPE_OVERRIDES, "init_from": str(base), "epochs": epochs,
              "lr": lr}
    recipe["batch_size"] = int(min(recipe.get("batch_size", 64), int((ds.split == "train").sum())))
    head_cache = None
    if mode == "head":
        summary, head_cache = train_head(base, ds, run_dir, recipe, callbacks=callbacks,
                                         stop_event=stop_event,
                                         extra={"feedback_holdout": (faces[held], y[held])})
    else:
        summary = train(ds, TrainConfig.from_dict(recipe), run_dir, callbacks=callbacks,
                        stop_event=stop_event,
                        resume=resume and (run_dir / runs.LAST_FILE).exists(), command=command)
    t_train = time.perf_counter() - t0
    record = {"status": summary["status"], "mode": mode, "base": str(base), "base_model_id":
              base_model.model_id, "replay_source": str(replay_ds.source),
              "n_feedback": int(len(ids)), "n_feedback_train": int((~held).sum()),
              "n_holdout": int(held.sum()), "n_replay": int(len(replay_idx)),
              "replay": replay, "holdout": holdout, "epochs": epochs, "lr": lr,
              "best_val_accuracy": summary.get("best_val_accuracy"),
              "train_time_s": round(t_train, 2)}
    if summary["status"] in ("finished", "early_stopped") and head_cache is not None:
        emit(Log(topic="finetune", stage="compare"))
        result = head_comparison(base_model, run_dir, head_cache, n_boot,
                                 focus=sorted({base_model.labels[i] for i in y}))
        result["finetune"] = {k: record[k] for k in ("mode", "n_feedback", "n_holdout",
                                                     "n_replay", "replay", "epochs", "lr")}
        compare.write(run_dir, result)
        record["verdict"] = result["verdict"]
    elif summary["status"] in ("finished", "early_stopped"):
        emit(Log(topic="finetune", stage="calibrate"))
        n_val = int((replay_ds.split == "val").sum())
        if n_val >= 100:
            cal = evaluation.calibrate(run_dir, replay_ds, split="val", n_boot=200,
                                       check_split=None)
            evaluation.write_calibration(run_dir, cal)
        emit(Log(topic="finetune", stage="compare"))
        sets = {"val": replay_ds.subset("val"), "feedback_holdout": (faces[held], y[held])}
        result = compare.compare_models(base, run_dir, sets, n_boot=n_boot,
                                        focus=sorted({base_model.labels[i] for i in y}))
        result["finetune"] = {k: record[k] for k in ("mode", "n_feedback", "n_holdout",
                                                     "n_replay", "replay", "epochs", "lr")}
        compare.write(run_dir, result)
        record["verdict"] = result["verdict"]
    record["total_time_s"] = round(time.perf_counter() - t0, 2)
    runs.atomic_write_json(run_dir / FINETUNE_FILE, record)
    return record


def head_layer(model):
    """The model's classifier: its last layer, a Dense layer (FerError otherwise)."""
    last = model.layers[-1]
    if type(last).__name__ != "Dense":
        raise FerError(f"mode 'head' retrains the last Dense layer, but this model ends with "
                       f"{type(last).__name__}; use mode 'full'", where="mode")
    return last


def train_head(base, ds, run_dir, recipe: dict, callbacks=(), stop_event=None,
               extra: dict | None = None):
    """Mode "head": the base model's features stay as they are (its BatchNorm statistics
    included); only its last Dense layer is trained, on the features of the train split, for
    ``recipe["epochs"]`` epochs; the epoch with the best val accuracy is kept. Writes the run
    (model.keras, config.json, labels.json, history.jsonl, metrics.json). Returns (metrics,
    cache): cache holds the features and labels of the val split and of the ``extra`` faces
    (name -> (faces, labels)) with the base and the kept head weights, so that calibration and
    comparison need no second pass through the network."""
    import keras

    from fer_core.evaluation import model_batch
    from fer_core.model_files import load_keras

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(int(recipe.get("seed", 42)))
    model = load_keras(base)
    head = head_layer(model)
    features = keras.Model(model.inputs, head.input)
    n_classes = len(ds.label_names)

    def feats(split):
        m = ds.split == split
        return feats_of(ds.images[m]), ds.labels[m]

    def feats_of(images):
        return features.predict(model_batch(model, images), batch_size=256, verbose=0)

    emit_all = [c for c in callbacks if callable(c)]

    def emit(e):
        for c in emit_all:
            c(e)
    t0 = time.perf_counter()
    (xt, yt), (xv, yv) = feats("train"), feats("val")
    emit(Log(topic="train", stage="start", run_dir=str(run_dir), arch=recipe.get("arch"),
             mode="head", epochs=recipe["epochs"], initial_epoch=0, batches=1, n_train=len(yt),
             n_val=len(yv), resumed=False, features_sec=time.perf_counter() - t0))
    clf = keras.Sequential([keras.Input((xt.shape[1],)),
                            keras.layers.Dense(n_classes, activation=head.activation)])
    clf.layers[-1].set_weights(head.get_weights())
    clf.compile(optimizer=keras.optimizers.Adam(recipe["lr"]),
                loss=keras.losses.CategoricalCrossentropy(
                    label_smoothing=float(recipe.get("label_smoothing", 0.0))),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    targets = np.eye(n_classes, dtype=np.float32)[yt]
    w0 = head.get_weights()
    best, best_acc, best_epoch, status, done = None, -1.0, 0, "finished", 0
    history_path = run_dir / "history.jsonl"
    history_path.unlink(missing_ok=True)
    for epoch in range(1, recipe["epochs"] + 1):
        if stop_event is not None and stop_event.is_set():
            status = "stopped"
            break
        t = time.perf_counter()
        h = clf.fit(xt, targets, batch_size=recipe["batch_size"], epochs=1, shuffle=True,
                    verbose=0).history
        val_acc = float((clf.predict(xv, batch_size=1024, verbose=0).argmax(1) == yv).mean())
        if val_acc > best_acc:
            best, best_acc, best_epoch = clf.layers[-1].get_weights(), val_acc, epoch
        row = {"epoch": epoch, "epochs": recipe["epochs"],
               "loss": float(h["loss"][-1]), "accuracy": float(h["accuracy"][-1]),
               "val_accuracy": val_acc, "lr": recipe["lr"],
               "time_sec": time.perf_counter() - t, "best_val_accuracy": best_acc,
               "best_epoch": best_epoch}
        runs.append_jsonl(history_path, row)
        emit(Metric(**row, eta_sec=eta(epoch, recipe["epochs"], 1 / max(row["time_sec"], 1e-9))))
        done = epoch
    if best is not None:
        head.set_weights(best)
        runs.save_model_atomic(model, run_dir / runs.MODEL_FILE, include_optimizer=False)
    runs.atomic_write_json(run_dir / "config.json", {**recipe, "finetune_mode": "head"})
    runs.atomic_write_json(run_dir / "labels.json", list(ds.label_names))
    metrics = runs.write_metrics(run_dir, {
        "status": status if best is not None else "stopped", "arch": recipe.get("arch"),
        "epochs": recipe["epochs"], "epochs_done": done,
        "best_val_accuracy": round(best_acc, 6) if best is not None else None,
        "best_epoch": best_epoch, "train_time_sec": time.perf_counter() - t0,
        "label_set": ds.label_set, "has_model": best is not None, "run_dir": str(run_dir),
        "data": {"source": ds.source, "synthetic": bool(ds.synthetic), "n_train": len(yt),
                 "n_val": len(yv)}})
    emit(Done(**metrics))
    cache = {"w0": w0, "best": best, "sets": {"val": (yv, xv)}}
    for name, (faces_, labels_) in (extra or {}).items():
        if len(labels_):
            cache["sets"][name] = (np.asarray(labels_), feats_of(faces_))
    return metrics, cache


def head_comparison(base_model, run_dir, cache: dict, n_boot: int, focus) -> dict:
    """Calibration (temperature fitted on val, ``calibration.json``) and the comparison of a
    head fine-tuning, from the features it kept (no second pass through the network)."""
    from fer_core import compare, evaluation
    from fer_core.model import FerModel, apply_temperature
    from fer_core.model_files import file_sha256

    def probs(w, x):
        z = x @ w[0] + w[1]
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    yv, xv = cache["sets"]["val"]
    t = evaluation.fit_temperature(yv, probs(cache["best"], xv))
    raw = probs(cache["best"], xv)
    rec = {"temperature": round(t, 6), "temperature_tta": round(t, 6), "tta_default": False,
           "split": "val", "n": int(len(yv)), "method": "ece",
           "model_sha256": file_sha256(Path(run_dir) / runs.MODEL_FILE),
           "no_tta": {"temperature": round(t, 6),
                      "ece_before": evaluation.calibration(yv, raw)[0],
                      "ece_after": evaluation.calibration(yv, apply_temperature(raw, t))[0]},
           "note": "fitted on the val split after head fine-tuning (single pass; flip TTA not "
                   "measured, so it stays off)"}
    evaluation.write_calibration(run_dir, rec)
    t_base = base_model.calibration.for_tta(False)
    sets = {name: (y, apply_temperature(probs(cache["w0"], x), t_base),
                   apply_temperature(probs(cache["best"], x), t))
            for name, (y, x) in cache["sets"].items()}
    candidate = FerModel.load(run_dir)
    return compare.compare_probs((base_model.name, base_model.model_id),
                                 (candidate.name, candidate.model_id), base_model.labels, sets,
                                 n_boot=n_boot, focus=focus)


# ---------------------------------------------------------------------------- the job

def load_feedback(feedback_db):
    """(faces, labels, ids) of every row in the store named by ``feedback_db``."""
    from fer_core.api.feedback_store import FeedbackStore

    store = FeedbackStore(feedback_db)
    try:
        return store.feedback_rows()
    finally:
        store.close()


def run_job(spec: dict, ctx) -> dict:
    """The "finetune" job (registered in :mod:`fer_core.jobs`)."""
    from fer_core import data
    from fer_core.training.job import _Sink, _StopFlag

    check_spec(spec)
    feedback = load_feedback(spec["feedback_db"])
    replay_ds = data.load(replay_source(spec["base"], spec.get("data", "")))
    sink = _Sink(ctx)
    return finetune(spec["base"], feedback, replay_ds, ctx.job_dir, replay=spec["replay"],
                    holdout=spec["holdout"], mode=spec.get("mode", DEFAULT_MODE),
                    epochs=spec["epochs"], lr=spec["lr"],
                    seed=spec["seed"], n_boot=spec["n_boot"], callbacks=[sink],
                    stop_event=_StopFlag(ctx), resume=bool(spec.get("resume")),
                    command=spec.get("command", ""), emit=ctx.emit)


def resume_spec(spec: dict) -> dict:
    return {**spec, "resume": True}
