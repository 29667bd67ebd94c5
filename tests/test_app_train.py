"""AppTest of the Train page: defaults, a tiny run end to end, bad configs, one job at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fer_core.data.fer2013 import to_csv_bytes
from fer_core.training import job_manager
from tests.factories import pattern_faces

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


@pytest.fixture
def small_csv(tmp_path, monkeypatch) -> Path:
    """A learnable toy set as a FER2013 CSV, and runs written to a temp dir."""
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    ds = pattern_faces(n_per_class=24, splits=("train", "val"))
    path = tmp_path / "toy.csv"
    path.write_bytes(to_csv_bytes(ds.images, ds.labels, ds.split))
    return path


@pytest.fixture(autouse=True)
def _no_job_left_running():
    yield
    job = job_manager().job
    if job is not None and job.running:
        job.stop()
        job.wait(120)


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


def test_form_has_sensible_defaults_and_names_the_dataset():
    at = _train_page()
    arch = next(s for s in at.selectbox if s.label == "Architecture")
    assert arch.value == "vgg" and "mini_xception" in arch.options
    assert next(n for n in at.number_input if n.label == "Epochs").value >= 1
    assert any("Synthetic demo" in c.value for c in at.caption)


def test_tiny_run_trains_and_shows_the_summary(small_csv, tmp_path):
    at = _train_page(small_csv)
    _tiny(at, epochs=2)
    _submit(at)
    assert not at.error, [e.value for e in at.error]
    job = job_manager().job
    assert job is not None and str(job.run_dir).startswith(str(tmp_path / "runs"))
    assert job.wait(240), "training did not finish"
    assert job.status == "finished", job.error
    at.run()
    assert not at.exception, at.exception
    assert any("finished" in h.value for h in at.subheader)
    best = next(m for m in at.metric if m.label == "best val accuracy").value
    assert float(best.rstrip("%")) > 50, f"no learning: best val accuracy {best} (chance 14%)"
    history = job.history()
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]
    # the finished run is the session's active model and is listed under past runs
    assert at.session_state["active_model"] == str(job.run_dir)
    assert any(job.run_dir.name in o for s in at.selectbox if s.label == "Run"
               for o in s.options)


def test_bad_config_shows_an_error_and_starts_nothing(small_csv):
    at = _train_page(small_csv)
    before = job_manager().job
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
    assert job_manager().job is before


def test_a_second_start_is_refused_while_a_job_runs(small_csv):
    first, second = _train_page(small_csv), _train_page(small_csv)  # two browser sessions
    _tiny(first, epochs=200)
    _submit(first)
    job = job_manager().job
    assert job.running
    _tiny(second)
    _submit(second)
    assert any("already running" in e.value for e in second.error), \
        [e.value for e in second.error]
    assert job_manager().job is job
    # the other session sees the running job and can stop it
    assert any(job.run_dir.name in i.value for i in second.info)
    next(b for b in second.button if "Stop" in b.label).click().run()
    assert not second.exception, second.exception
    assert job.wait(120) and job.status == "stopped"
    second.run()
    assert any("stopped" in h.value for h in second.subheader)
