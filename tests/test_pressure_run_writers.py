"""Every writer of a run directory holds its lock, and is refused before it touches a file:

* an app training job (:class:`fer_core.jobs.JobRunner`) on a run a real CLI ``train --resume``
  holds is refused naming the CLI's pid, and the run's files (the previous job's files included)
  stay byte-identical;
* ``calibrate`` and ``export`` into a run, :func:`fer_core.evaluation.write_calibration` and
  :func:`fer_core.finetune.finetune` are refused while another process or thread holds the run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("keras")

from fer_core import jobs, runs  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.jobs import JobRunner  # noqa: E402
from fer_core.training import TrainConfig, start_training, train_spec  # noqa: E402
from fer_core.training.job import resume_spec  # noqa: E402
from tests.factories import (ROOT, TINY_TRAIN, end_process, make_tiny_run,  # noqa: E402
                             pattern_faces, write_fer_csv)


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    return write_fer_csv(pattern_faces(n_per_class=24),
                         tmp_path_factory.mktemp("data") / "faces.csv")


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fer_core", *map(str, args)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _holder(run_dir) -> dict:
    try:
        return json.loads((run_dir / runs.RUN_HOLDER).read_text())
    except (OSError, ValueError):
        return {}


def test_an_app_job_on_a_run_the_cli_holds_is_refused_before_any_file_changes(toy_csv,
                                                                               tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "run"
    job = start_training(JobRunner(root), train_spec(toy_csv, TrainConfig(**TINY_TRAIN,
                                                                          epochs=1)), run_dir)
    holder = _holder(run_dir)  # the starter took the run and named the child before returning
    assert holder["what"] == "train job" and holder["pid"] != os.getpid()
    with pytest.raises(FerError, match=f"being written by pid {holder['pid']} .*train job"):
        with runs.run_lock(run_dir, "another writer"):
            pass
    assert job.wait(300) and job.state()["status"] == "finished", job.state()
    assert job.state()["pid"] == holder["pid"]
    assert not (run_dir / runs.RUN_HOLDER).exists()  # the job released the run
    cli = subprocess.Popen([sys.executable, "-m", "fer_core", "train", str(toy_csv), "--resume",
                            str(run_dir), "--epochs", "500", "--quiet"], cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _holder(run_dir).get("pid") != cli.pid:
            assert cli.poll() is None and time.monotonic() < deadline, cli.stderr.read()
            time.sleep(0.1)
        os.kill(cli.pid, signal.SIGSTOP)  # holds the lock, writes nothing while we look
        before = (_files(run_dir), (root / jobs.CURRENT_FILE).read_bytes())
        with pytest.raises(FerError) as e:
            start_training(JobRunner(root), resume_spec(job.spec, run_dir), run_dir)
        after = (_files(run_dir), (root / jobs.CURRENT_FILE).read_bytes())
        os.kill(cli.pid, signal.SIGCONT)
    finally:
        os.kill(cli.pid, signal.SIGCONT)
        end_process(cli)
    assert e.value.status == 409
    assert f"being written by pid {cli.pid} on {socket.gethostname()} (train --resume, " \
           "since " in str(e.value)
    assert after == before  # job.json, job_state.json, events.jsonl, job.log: untouched
    assert "job.json" in before[0] and "events.jsonl" in before[0]
    assert JobRunner(root).current().state()["status"] == "finished"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("runs"), "tiny", epochs=2)


class _HeldElsewhere:
    """The run's lock held by another thread of this process (as another writer would)."""

    def __init__(self, run_dir, what="train"):
        self.run_dir, self.what = run_dir, what
        self._taken, self._release = threading.Event(), threading.Event()

    def __enter__(self):
        def hold():
            with runs.run_lock(self.run_dir, self.what):
                self._taken.set()
                self._release.wait(120)
        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()
        assert self._taken.wait(30)
        return self

    def __exit__(self, *exc):
        self._release.set()
        self._thread.join(30)


def test_calibrate_and_export_into_a_held_run_are_refused_naming_the_holder(tiny_run, toy_csv):
    before = _files(tiny_run)
    with runs.run_lock(tiny_run, "train"):  # this process writes the run
        for args in (["calibrate", toy_csv, "--model", tiny_run, "--bootstrap", 200],
                     ["export", tiny_run, "--format", "tflite"]):
            r = _cli(*args)
            assert r.returncode == 2, (args, r.stdout, r.stderr[-2000:])
            assert f"the run is being written by pid {os.getpid()} on {socket.gethostname()} " \
                   "(train, since " in r.stderr, r.stderr[-2000:]
            assert "Traceback" not in r.stderr
        after = _files(tiny_run)
    lock_files = (runs.RUN_LOCK, runs.RUN_HOLDER)
    assert {k: v for k, v in after.items() if k not in lock_files} == \
        {k: v for k, v in before.items() if k not in lock_files}
    assert not (tiny_run / "calibration.json").exists()
    assert not (tiny_run / "model.tflite").exists()


def test_write_calibration_and_finetune_refuse_a_run_another_thread_writes(tiny_run, tmp_path):
    from fer_core import evaluation, finetune

    with _HeldElsewhere(tiny_run, "swa"):
        with pytest.raises(FerError, match=r"being written by pid \d+ .*\(swa, since ") as e:
            evaluation.write_calibration(tiny_run, {"temperature": 2.0})
        assert e.value.status == 409
        with pytest.raises(FerError, match=r"\(swa, since "):
            finetune.finetune(tiny_run, (None, [], []), None, tiny_run)
    assert not (tiny_run / "calibration.json").exists()
    loose = tmp_path / "loose.keras"  # a .keras file outside any run: no lock needed
    loose.write_bytes((tiny_run / "model.keras").read_bytes())
    assert evaluation.write_calibration(loose, {"temperature": 1.0}).exists()
    assert not (tmp_path / runs.RUN_LOCK).exists()
    path = evaluation.write_calibration(tiny_run, {"temperature": 1.5})  # free again
    assert path == tiny_run / "calibration.json" and path.exists()
    path.unlink()


def test_promote_reads_one_state_of_the_run(tiny_run, tmp_path, monkeypatch):
    """Promotion reads the model, labels, calibration and flatbuffer under the run's read lock:
    refused while a writer holds the run, and a writer is refused while it reads."""
    from fer_core import promotion
    from fer_core.api.feedback_store import FeedbackStore

    store = FeedbackStore(tmp_path / "s.sqlite3")
    with _HeldElsewhere(tiny_run, "swa"):
        with pytest.raises(FerError, match=r"being written by pid \d+ .*\(swa, since .*\); "
                                           r"promote it when that ends") as e:
            promotion.promote(store, tiny_run)
        assert e.value.status == 409
    assert store.active()["model_id"] is None and store.history() == []

    seen = []
    real = promotion.candidate_record

    def reading(run, reference=None):  # a writer arrives while the promotion reads
        try:
            with runs.run_lock(tiny_run, "calibrate"):
                seen.append("written")
        except FerError as err:
            seen.append(err.status)
        return real(run, reference)

    monkeypatch.setattr(promotion, "candidate_record", reading)
    out = promotion.promote(store, tiny_run, who="test")
    assert seen == [409] and out["model_id"] == store.active()["model_id"]
    with runs.run_lock(tiny_run, "calibrate"):  # free once the promotion has read
        with runs.run_read_lock(tiny_run, "read"):  # the writer's own thread may read
            pass
    store.close()
