"""Training: learning happens, checkpoints/resume, stop, config validation, seeds, jobs, CLI."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("keras")

from fer_core import runs  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.job_events import Done, Metric, Progress  # noqa: E402
from fer_core.jobs import JobRunner  # noqa: E402
from fer_core.training import (TrainConfig, make_schedule, resume_spec,  # noqa: E402
                               start_training, train, train_spec)
from tests.factories import TINY_TRAIN as TINY  # noqa: E402
from tests.factories import pattern_faces  # noqa: E402



@pytest.fixture(scope="module")
def faces():
    return pattern_faces(n_per_class=24)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def test_two_epochs_beat_chance_and_write_a_run(faces, tmp_path):
    events = []
    result = train(faces, cfg(epochs=2), tmp_path / "run", callbacks=[events.append])
    assert result["status"] == "finished"
    assert result["best_val_accuracy"] > 0.5  # chance is 1/7 = 0.14
    history = runs.read_jsonl(tmp_path / "run" / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec"):
        assert np.isfinite(history[-1][key])
    assert history[-1]["loss"] < history[0]["loss"] or history[-1]["val_accuracy"] > 0.5
    import zipfile
    with zipfile.ZipFile(tmp_path / "run" / "model.keras") as zf:  # best model: no optimizer
        best_weights = zf.getinfo("model.weights.h5").file_size
    with zipfile.ZipFile(tmp_path / "run" / runs.LAST_FILE) as zf:  # resume checkpoint: with
        last_weights = zf.getinfo("model.weights.h5").file_size
    assert best_weights < 0.6 * last_weights
    run = runs.load_run(tmp_path / "run")
    assert run.labels == list(faces.label_names) and run.config["arch"] == "vgg"
    assert "Best val accuracy" in run.card and "CPU" in run.card
    report = result["val_report"]       # the best model re-evaluated on val, per class
    assert report["accuracy"] == pytest.approx(result["best_val_accuracy"], abs=1e-6)
    assert set(report["per_class"]) == set(faces.label_names)
    assert "| angry |" in run.card
    assert "Known limits" not in run.card                    # only said of FER2013 data
    card = runs.write_model_card(tmp_path / "run", run.config, run.metrics,
                                 {"source": "data/fer2013.csv.gz", "n_train": 1, "n_val": 1})
    assert "Known limits and biases (FER2013)" in card and "disgust" in card
    model = run.load_model()
    probs = model.predict(faces.subset("val").images[:, :, :, None], verbose=0)
    assert (probs.argmax(1) == faces.subset("val").labels).mean() == pytest.approx(
        result["best_val_accuracy"], abs=1e-6)
    types = {e.type for e in events}
    assert {"log", "progress", "metric", "done"} <= types
    batch = [e for e in events if isinstance(e, Progress)][-1]
    assert batch.total == 11 and batch.epoch == 2 and batch.eta_sec is not None
    assert batch.unit == "batch" and batch.rate > 0


def test_checkpoint_then_resume_continues_history_and_schedule(faces, tmp_path, monkeypatch):
    config = cfg(epochs=3, schedule="cosine", warmup_epochs=1.0)
    stop = threading.Event()

    def stop_after_epoch_2(e):
        if isinstance(e, Metric) and e.epoch == 2:
            stop.set()

    first = train(faces, config, tmp_path / "run", callbacks=[stop_after_epoch_2],
                  stop_event=stop, command="fer_core train toy --epochs 3")
    assert first["status"] == "stopped" and first["epochs_done"] == 2
    assert (tmp_path / "run" / runs.LAST_FILE).exists()
    with pytest.raises(FerError, match="resume"):
        train(faces, config, tmp_path / "run")  # would overwrite the run
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    runs.atomic_write_json(tmp_path / "run" / "metrics.json",
                           {**metrics, "notes": ["renamed by hand"]})
    first_machine = runs.hardware()
    other = {**first_machine, "cpu": "Other CPU 9000", "cores": 64}
    monkeypatch.setattr(runs, "hardware", lambda: other)  # resumed on another machine
    second = train(faces, config, tmp_path / "run", resume=True,
                   command="fer_core train toy --resume run")
    assert second["machines"] == [first_machine, other] and second["hardware"] == other
    assert second["status"] == "finished" and second["epochs_done"] == 3
    assert second["commands"] == ["fer_core train toy --epochs 3", "fer_core train toy --resume run"]
    card = runs.load_run(tmp_path / "run").card
    assert card.index("--epochs 3`") < card.index("--resume run`")   # both, in order
    assert "- Note: renamed by hand" in card                          # kept over the resume
    assert "Trained on 2 machines" in card and "Other CPU 9000 (64 cores)" in card
    assert f"{first_machine['cpu']} ({first_machine['cores']} cores)" in card
    history = runs.read_jsonl(tmp_path / "run" / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    steps = 11
    schedule = make_schedule(config, steps)
    for row in history:  # lr after epoch k = schedule at step k*steps: the schedule continued
        assert row["lr"] == pytest.approx(float(schedule(row["epoch"] * steps)), rel=1e-4)
    assert history[2]["lr"] < history[1]["lr"]


def test_stop_mid_epoch_ends_within_a_batch_and_keeps_best(faces, tmp_path):
    stop = threading.Event()
    seen = []

    def on_event(e):
        if isinstance(e, Progress):
            seen.append((e.epoch, e.done))
            if e.epoch == 2 and e.done == 3:
                stop.set()

    result = train(faces, cfg(epochs=5), tmp_path / "run", callbacks=[on_event], stop_event=stop)
    assert result["status"] == "stopped"
    assert max(b for ep, b in seen if ep == 2) == 3  # no batch ran after the request
    assert not any(ep > 2 for ep, _ in seen)
    assert result["epochs_done"] == 1 and result["best_epoch"] == 1
    assert (tmp_path / "run" / "model.keras").exists()
    assert len(runs.read_jsonl(tmp_path / "run" / "history.jsonl")) == 1


@pytest.mark.parametrize("change, field", [
    ({"epochs": 0}, "epochs"),
    ({"arch": "nope"}, "arch"),
    ({"batch_size": 100000}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"schedule": "exp"}, "schedule"),
    ({"label_set": "fer9"}, "label_set"),
    ({"erasing": 2.0}, "erasing"),
    ({"arch_params": {"colour": 1}}, "arch_params"),
    ({"flip": "yes"}, "flip"),
])
def test_bad_configs_rejected_naming_the_field(faces, tmp_path, change, field):
    with pytest.raises(FerError) as err:
        train(faces, cfg(**change), tmp_path / "run")
    assert field in str(err.value)
    assert not (tmp_path / "run").exists()  # rejected before anything started


def test_empty_splits_rejected(tmp_path):
    only_train = pattern_faces(n_per_class=4, splits=("train",))
    with pytest.raises(FerError, match="val split"):
        cfg(epochs=1).validate(only_train)
    only_val = pattern_faces(n_per_class=4, splits=("val",))
    with pytest.raises(FerError, match="train split"):
        cfg(epochs=1).validate(only_val)
    with pytest.raises(FerError, match="unknown setting"):
        TrainConfig.from_dict({"epochz": 3})


def test_same_seed_same_first_epoch_metrics(faces, tmp_path):
    config = cfg(epochs=1, shift=0.1, rotation=10.0, erasing=0.3, seed=7)
    a = train(faces, config, tmp_path / "a")
    b = train(faces, config, tmp_path / "b")
    ha = runs.read_jsonl(tmp_path / "a" / "history.jsonl")[0]
    hb = runs.read_jsonl(tmp_path / "b" / "history.jsonl")[0]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ha[key] == pytest.approx(hb[key], rel=1e-5, abs=1e-6), key
    assert a["best_val_accuracy"] == b["best_val_accuracy"]


@pytest.fixture
def toy_csv(faces, tmp_path):
    from fer_core.data.fer2013 import to_csv_bytes
    path = tmp_path / "faces.csv"
    path.write_bytes(to_csv_bytes(faces.images, faces.labels, faces.split))
    return path


def _epochs_seen(job) -> list[int]:
    return [e.epoch for e in job.events()[0] if isinstance(e, Metric)]


def _wait_for_epochs(job, n, timeout=300):
    deadline = time.monotonic() + timeout
    while len(_epochs_seen(job)) < n:
        assert job.running, job.state()
        assert time.monotonic() < deadline, f"no {n} epochs in {timeout} s"
        time.sleep(0.2)


def test_a_training_job_learns_in_a_child_process(toy_csv, tmp_path):
    runner = JobRunner(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "run"
    job = start_training(runner, train_spec(toy_csv, cfg(epochs=2)), run_dir)
    assert job.kind == "train" and job.wait(300)
    state = job.state()
    assert state["status"] == "finished", (state["error"], state["log_tail"])
    assert state["pid"] != os.getpid()
    events = job.events()[0]
    assert events[0].stage == "start" and isinstance(events[-1], Done)
    epochs = [e for e in events if isinstance(e, Metric)]
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[-1].loss < epochs[0].loss and epochs[-1].val_accuracy > 0.5
    batches = [e for e in events if isinstance(e, Progress)]
    assert batches and {(e.epoch, e.done) for e in batches} >= {(1, 11), (2, 11)}
    assert state["result"]["best_val_accuracy"] > 0.5  # chance is 1/7
    run = runs.load_run(run_dir)
    assert run.metrics["status"] == "finished" and run.has_model
    assert run.metrics["schema_version"] == runs.METRICS_SCHEMA


def test_a_training_job_with_a_bad_config_or_a_busy_runner_is_refused(faces, toy_csv, tmp_path):
    runner = JobRunner(tmp_path / "runs")
    with pytest.raises(FerError, match="batch_size"):
        start_training(runner, train_spec(toy_csv, cfg(batch_size=4000)), tmp_path / "runs" / "a",
                       dataset=faces)
    with pytest.raises(FerError, match="batch_size"):  # max_train applies before the check
        start_training(runner, train_spec(toy_csv, cfg(batch_size=100), max_train=50),
                       tmp_path / "runs" / "a", dataset=faces)
    assert runner.current() is None and not (tmp_path / "runs" / "a").exists()
    job = start_training(runner, train_spec(toy_csv, cfg(epochs=500)), tmp_path / "runs" / "b")
    try:
        with pytest.raises(FerError, match="already running") as err:
            start_training(JobRunner(tmp_path / "runs"), train_spec(toy_csv, cfg(epochs=1)),
                           tmp_path / "runs" / "c")
        assert err.value.status == 409
    finally:
        job.stop()
    assert job.wait(300) and job.state()["status"] == "stopped"


def test_stop_keeps_the_best_model_and_a_crashed_run_resumes(toy_csv, tmp_path):
    runner = JobRunner(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "run"
    assert resume_spec({"x": 1}, run_dir) == {"x": 1, "resume": False}  # nothing to resume yet
    job = start_training(runner, train_spec(toy_csv, cfg(epochs=500)), run_dir)
    _wait_for_epochs(job, 1)
    job.stop()
    assert job.wait(300)
    state = job.state()
    assert state["status"] == "stopped" and state["result"]["status"] == "stopped"
    assert state["result"]["best_epoch"] >= 1 and (run_dir / "model.keras").exists()
    assert runs.read_metrics(run_dir)["status"] == "stopped"

    spec = resume_spec(job.spec, run_dir)           # resume; then the job process dies
    assert spec["resume"] is True
    done = json.loads((run_dir / "state.json").read_text())["epoch"]
    job = start_training(runner, spec, run_dir)
    _wait_for_epochs(job, 1)
    os.kill(job.state()["pid"], signal.SIGKILL)
    assert job.wait(60)
    state = job.state()
    assert state["status"] == "crashed" and state["signal"] == "SIGKILL"
    assert (run_dir / "model.keras").exists()      # the best model survives the crash

    spec = resume_spec(job.spec, run_dir)
    saved = json.loads((run_dir / "state.json").read_text())["epoch"]
    assert saved > done
    spec["config"]["epochs"] = saved + 1
    job = start_training(runner, spec, run_dir)
    assert job.wait(300)
    state = job.state()
    assert state["status"] == "finished", (state["error"], state["log_tail"])
    assert _epochs_seen(job) == [saved + 1]
    history = runs.read_jsonl(run_dir / "history.jsonl")
    assert [r["epoch"] for r in history] == list(range(1, saved + 2))
    assert state["result"]["best_val_accuracy"] > 0.5


def test_cli_train_on_a_csv(faces, tmp_path, capsys):
    from fer_core.cli import main
    from fer_core.data.fer2013 import to_csv_bytes

    csv = tmp_path / "faces.csv"
    csv.write_bytes(to_csv_bytes(faces.images, faces.labels, faces.split))
    out = tmp_path / "run"
    rc = main(["train", str(csv), "--arch", "vgg", "--param", "width=8", "--param", "depth=1",
               "--param", "bn_momentum=0.8", "--epochs", "2", "--batch-size", "16",
               "--lr", "0.003", "--warmup-epochs", "0", "--shift", "0", "--rotation", "0",
               "--zoom", "0", "--contrast", "0", "--erasing", "0", "--out", str(out),
               "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    assert summary["best_val_accuracy"] > 0.5
    for name in ("model.keras", "config.json", "history.jsonl", "metrics.json", "labels.json",
                 "model_card.md"):
        assert (out / name).exists(), name
    # resume to 3 epochs from the CLI
    rc = main(["train", str(csv), "--resume", str(out), "--epochs", "3", "--json", "--quiet"])
    assert rc == 0
    assert len(runs.read_jsonl(out / "history.jsonl")) == 3
    # a bad architecture is a clean error, exit 2
    rc = main(["train", str(csv), "--arch", "nope", "--epochs", "1", "--out", str(tmp_path / "x")])
    assert rc == 2 and "arch" in capsys.readouterr().err


def test_other_options_label_set_class_weights_plateau_sgd_tensorboard(faces, tmp_path):
    config = cfg(epochs=1, label_set="merged6", class_weight="balanced", schedule="plateau",
                 optimizer="sgd", lr=0.05, tensorboard=True, flip=True, zoom=0.1,
                 contrast=0.2)
    result = train(faces, config, tmp_path / "run")
    assert result["status"] == "finished" and result["labels"] == [
        "angry", "fear", "happy", "sad", "surprise", "neutral"]
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == result["labels"]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    model = runs.load_model(tmp_path / "run")
    assert model.output_shape == (None, 6)
