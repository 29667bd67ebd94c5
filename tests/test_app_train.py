"""AppTest of the Train page: defaults, a tiny run end to end, bad configs, one job at a time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer_core import runs
from fer_core.data.fer2013 import to_csv_bytes
from fer_core.jobs import JobRunner
from tests.factories import pattern_faces

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


@pytest.fixture
def runner(tmp_path, monkeypatch) -> JobRunner:
    """Runs written to a temp dir; a job left running is ended after the test (killed: how it
    ends is not what the test checks, and a clean stop waits for TensorFlow to load)."""
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    r = JobRunner(tmp_path / "runs")
    yield r
    job = r.current()
    if job is not None and job.running:
        job.stop()    # in case it has not written its pid yet
        job.kill()
        if not job.wait(120):
            job.kill()


@pytest.fixture
def small_csv(tmp_path, runner) -> Path:
    """A learnable toy set as a FER2013 CSV."""
    ds = pattern_faces(n_per_class=24, splits=("train", "val"))
    path = tmp_path / "toy.csv"
    path.write_bytes(to_csv_bytes(ds.images, ds.labels, ds.split))
    return path


def _train_page(csv: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if csv is not None:
        at.session_state["active_dataset"] = {"source": str(csv), "strict": True,
                                              "name": csv.name}
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def _set(at, label, value):
    widget = next(w for w in [*at.number_input, *at.selectbox, *at.text_input, *at.slider,
                              *at.checkbox] if w.label == label)
    widget.set_value(value)


def _submit(at):
    next(b for b in at.button if "Start training" in b.label).click().run()
    assert not at.exception, at.exception
    return at


def _tiny(at, epochs=2, batch=16):
    """A small Flatten-head CNN (learns bar positions fast), no augmentation, constant LR."""
    _set(at, "Architecture", "mememoji")
    _set(at, "Architecture parameters (JSON)", '{"dense": 32, "dropout": 0.0}')
    _set(at, "Epochs", epochs)
    _set(at, "Batch size", batch)
    _set(at, "LR schedule", "constant")
    _set(at, "Label smoothing", 0.0)
    _set(at, "Flip", False)
    for label in ("Shift", "Rotation °", "Zoom", "Contrast", "Erasing p"):
        _set(at, label, 0.0)


def test_form_has_sensible_defaults_and_names_the_dataset(runner):
    at = _train_page()
    arch = next(s for s in at.selectbox if s.label == "Architecture")
    assert arch.value == "vgg" and "mini_xception" in arch.options
    assert next(n for n in at.number_input if n.label == "Epochs").value >= 1
    assert any("Synthetic demo" in c.value for c in at.caption)


def test_tiny_run_trains_and_shows_the_summary(small_csv, runner, tmp_path):
    at = _train_page(small_csv)
    _tiny(at, epochs=2)
    _submit(at)
    assert not at.error, [e.value for e in at.error]
    job = runner.current()
    assert job is not None and str(job.job_dir).startswith(str((tmp_path / "runs").resolve()))
    assert job.spec["data"] == str(small_csv)            # the child reads the file itself
    assert job.wait(240), "training did not finish"
    assert job.status == "finished", job.state()["error"]
    at.run()
    assert not at.exception, at.exception
    assert any("finished" in h.value for h in at.subheader)
    best = next(m for m in at.metric if m.label == "best val accuracy").value
    assert float(best.rstrip("%")) > 50, f"no learning: best val accuracy {best} (chance 14%)"
    history = runs.read_jsonl(job.job_dir / "history.jsonl")
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]
    # the finished run is the session's active model and is listed under past runs
    assert at.session_state["active_model"] == str(job.job_dir)
    assert any(job.job_dir.name in o for s in at.selectbox if s.label == "Run"
               for o in s.options)
    assert not any(b.label == "↻ Resume" for b in at.button)   # nothing to resume


def test_bad_config_shows_an_error_and_starts_nothing(small_csv, runner):
    at = _train_page(small_csv)
    _tiny(at, batch=4000)  # larger than the 168-face train split
    _submit(at)
    assert at.error and "batch\\_size" in at.error[0].value, [e.value for e in at.error]
    _set(at, "Batch size", 16)
    _set(at, "Architecture parameters (JSON)", "{dense: 8")
    _submit(at)
    assert at.error and "JSON" in at.error[0].value
    _set(at, "Architecture parameters (JSON)", '{"nope": 1}')
    _submit(at)
    assert at.error and "nope" in at.error[0].value
    assert runner.current() is None


def test_a_second_start_is_refused_while_a_job_runs(small_csv, runner):
    first, second = _train_page(small_csv), _train_page(small_csv)  # two browser sessions
    _tiny(first, epochs=200)
    _submit(first)
    job = runner.current()
    assert job.running
    _tiny(second)
    _submit(second)
    assert any("already running" in e.value for e in second.error), \
        [e.value for e in second.error]
    assert runner.current().job_dir == job.job_dir
    # the other session sees the running job and can stop it
    assert any(job.job_dir.name in i.value for i in second.info)
    next(b for b in second.button if "Stop" in b.label).click().run()
    assert not second.exception, second.exception
    assert job.wait(120) and job.status == "stopped"
    second.run()
    assert any("stopped" in h.value for h in second.subheader)


def test_a_crashed_job_is_explained_and_resumes(small_csv, runner):
    at = _train_page(small_csv)
    _tiny(at, epochs=200)
    _submit(at)
    job = runner.current()
    deadline = time.monotonic() + 240
    while not runs.read_jsonl(job.job_dir / "history.jsonl"):   # one epoch checkpointed
        assert job.running and time.monotonic() < deadline, job.state()
        time.sleep(0.2)
    os.kill(job.state()["pid"], signal.SIGSEGV)
    assert job.wait(60)
    at.run()
    assert not at.exception, at.exception
    assert any("crashed" in h.value for h in at.subheader)
    assert any("killed by SIGSEGV" in e.value for e in at.error), [e.value for e in at.error]
    assert any("Segmentation fault" in c.value for c in at.code)   # the log's last lines
    next(b for b in at.button if b.label == "↻ Resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    resumed = runner.current()
    assert resumed.job_dir == job.job_dir and resumed.running and resumed.spec["resume"]
    assert any("Training" in i.value for i in at.info)


_START_AS_AN_EARLIER_APP = """
import json, sys
from fer_core.jobs import JobRunner
from fer_core.training import start_training
start_training(JobRunner(sys.argv[1]), json.loads(sys.argv[3]), sys.argv[2])
"""


def test_after_an_app_restart_the_page_reattaches_then_offers_resume(small_csv, runner):
    """A job started by an earlier app process (gone now) is followed and stopped like any
    other; one that died while no app watched it shows as interrupted, with Resume."""
    import json
    import subprocess
    import sys

    from fer_core.training import TrainConfig, train_spec
    from tests.factories import ROOT

    config = TrainConfig(arch="mememoji", arch_params={"dense": 32, "dropout": 0.0}, epochs=200,
                         batch_size=16, schedule="constant", label_smoothing=0.0, flip=False,
                         shift=0.0, rotation=0.0, zoom=0.0, contrast=0.0, erasing=0.0)
    run_dir = runner.root / "earlier-run"
    subprocess.run([sys.executable, "-c", _START_AS_AN_EARLIER_APP, str(runner.root),
                    str(run_dir), json.dumps(train_spec(small_csv, config))], cwd=ROOT,
                   check=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    at = _train_page(small_csv)
    assert any("earlier-run" in i.value and "Training" in i.value for i in at.info), \
        [i.value for i in at.info]
    assert any("Stop" in b.label for b in at.button)
    job = runner.current()
    deadline = time.monotonic() + 240
    while not any(e.type == "progress" for e in job.events()[0]):
        assert job.running and time.monotonic() < deadline, job.state()
        time.sleep(0.2)
    job.kill(signal.SIGKILL)                      # no app saw how it ended
    assert job.wait(60)
    at.run()
    assert not at.exception, at.exception
    assert any("interrupted" in h.value for h in at.subheader)
    assert any("ended without reporting" in w.value for w in at.warning)
    assert any(b.label == "↻ Resume" for b in at.button)
