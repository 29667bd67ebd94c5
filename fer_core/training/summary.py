"""What a training run records about itself: ``metrics.json`` (through
:func:`fer_core.runs.write_metrics`), the model card, the best model's validation report, and
weight averages (SWA) made after the run (:func:`apply_swa`)."""

from __future__ import annotations

import json
from pathlib import Path

from fer_core import runs, swa
from fer_core.errors import FerError
from fer_core.training.config import TrainConfig
from fer_core.training.state import RunState


def val_report(run_dir: Path, val_ds) -> dict | None:
    """Accuracy, macro-F1 and per-class precision/recall/F1 of the best model on val (for
    metrics.json and the model card); None when no best model was saved."""
    from fer_core import evaluation

    if not runs.has_model(run_dir):
        return None
    model = runs.load_model(run_dir)
    rep = evaluation.metrics(val_ds.labels, evaluation.predict_proba(model, val_ds.images),
                             val_ds.label_names)
    return {k: rep[k] for k in ("n", "accuracy", "top2_accuracy", "macro_f1", "per_class")}


def adopt_swa(state: RunState, record: dict, run_dir: Path, epochs) -> bool:
    """If the average became model.keras, it is the run's best from now on (its val accuracy,
    at the window's last epoch), so a resumed epoch must beat it to replace model.keras."""
    if not record["used"]:
        return False
    state.best_val_accuracy, state.best_epoch = record["val_accuracy"], record["epochs"][1]
    state.save(run_dir, epochs)
    return True


def record_swa(metrics: dict, record: dict) -> None:
    """Enter a new weight average in ``metrics``. It becomes ``swa`` when kept, or when no kept
    average is on record; the record it displaces moves to ``swa_tried`` (marked unused). A
    worse average joins ``swa_tried`` and leaves the record of the one model.keras holds."""
    current = metrics.get("swa")
    if record["used"] or not (current or {}).get("used"):
        if current:
            metrics["swa_tried"] = [*metrics.get("swa_tried", []), {**current, "used": False}]
        metrics["swa"] = record
    else:
        metrics["swa_tried"] = [*metrics.get("swa_tried", []), record]


def sources(config: TrainConfig, metrics: dict) -> list[dict]:
    """The starting weights and teachers of a run with the commands that made them, as
    recorded when it began (``metrics["sources"]``), else as they are now."""
    if metrics.get("sources"):
        return metrics["sources"]
    models = dict.fromkeys(m for m in (config.init_from, *config.teachers) if m)
    return [{"model": m, "commands": runs.model_commands(m)} for m in models]


def write_summary(run_dir, config: TrainConfig, state: RunState, info: dict, data_info: dict,
                  ds, status: str, command: str) -> dict:
    """Write metrics.json and the model card of a run in progress or ended; returns the
    metrics. What earlier sessions of the run recorded (commands, machines, notes, weight
    averages) is carried over."""
    run_dir = Path(run_dir)
    metrics = {"status": status, "arch": config.arch, "epochs": config.epochs,
               "epochs_done": state.epoch, "best_val_accuracy": state.best_val_accuracy,
               "best_epoch": state.best_epoch, "train_time_sec": state.train_time_sec,
               "labels": list(ds.label_names), "label_set": ds.label_set,
               "data": data_info, **info, "hardware": runs.hardware(),
               "has_model": (run_dir / runs.MODEL_FILE).exists(), "run_dir": str(run_dir)}
    old = runs.read_metrics(run_dir)
    metrics["machines"] = runs.with_machine(runs.machines_of(old), metrics["hardware"])
    commands = runs.commands_of(old)  # the first train, then each resume, in order
    if command and command not in commands:
        commands.append(command)
    metrics["commands"] = commands
    metrics["sources"] = sources(config, old)
    if old.get("notes"):  # notes added by hand (e.g. on a renamed run) stay
        metrics["notes"] = old["notes"]
    record = metrics.pop("swa", None)  # this session's average, if it made one
    for key in ("swa", "swa_tried"):  # weight averages made before a resume still hold
        if key in old:
            metrics[key] = old[key]
    if record is not None:
        record_swa(metrics, record)
    elif (metrics.get("swa") or {}).get("used") and \
            (state.best_epoch or 0) > metrics["swa"]["epochs"][1]:
        metrics["swa"] = {**metrics["swa"], "used": False}  # a later epoch beat the average
    metrics = runs.write_metrics(run_dir, metrics)
    runs.write_model_card(run_dir, config.to_dict(), metrics, data_info)
    return metrics


def run_config(run_dir) -> TrainConfig:
    """The TrainConfig of a finished or stopped run (FerError if it is not a training run)."""
    run_dir = runs.run_path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / runs.METRICS_FILE).exists():
        raise FerError("not a training run (no config.json/metrics.json)", where=str(run_dir))
    try:
        return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (ValueError, TypeError) as e:
        raise FerError(f"unreadable config.json: {e}", where=str(run_dir)) from None


def apply_swa(dataset, run_dir, first_epoch: int | None = None, last_epoch: int | None = None,
              command: str = "", emit=None) -> dict:
    """Average a finished run's weight snapshots (:func:`fer_core.swa.average_into_run`) and
    record the result in its metrics.json and model card. Returns the ``swa`` record."""
    run_dir = runs.run_path(run_dir)
    config = run_config(run_dir)
    with runs.run_lock(run_dir, "swa"):
        return _apply_swa(dataset, run_dir, config, first_epoch, last_epoch, command, emit)


def _apply_swa(dataset, run_dir, config, first_epoch, last_epoch, command, emit) -> dict:
    ds = dataset.remap(config.label_set) if config.label_set != dataset.label_set else dataset
    val_ds = ds.subset("val")
    if len(val_ds) == 0:
        raise FerError("the data has no val split to compare the average on", where="data")
    record = swa.average_into_run(run_dir, ds.subset("train"), val_ds, first_epoch, last_epoch,
                                  emit=emit)
    metrics = runs.read_metrics(run_dir)
    if RunState.exists(run_dir):
        state, epochs = RunState.load(run_dir)
        if adopt_swa(state, record, run_dir, epochs):
            metrics.update(best_val_accuracy=state.best_val_accuracy,
                           best_epoch=state.best_epoch)
    record_swa(metrics, record)
    metrics["sources"] = sources(config, metrics)
    if record["used"]:
        metrics["val_report"] = val_report(run_dir, val_ds)
    if command and command not in metrics.get("commands", []):
        metrics["commands"] = [*metrics.get("commands", []), command]
    metrics = runs.write_metrics(run_dir, metrics)
    runs.write_model_card(run_dir, config.to_dict(), metrics, metrics.get("data") or {})
    return record
