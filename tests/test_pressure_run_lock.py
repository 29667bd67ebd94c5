"""One writer per run directory: a real CLI ``train --resume`` (and ``swa``) started while an app
training job (:class:`fer_core.jobs.JobRunner`) trains the same run is refused, naming the holder;
after the job is killed (``kill -9``) the CLI takes the run over, and history.jsonl holds each
epoch once, in order."""

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

from fer_core import runs  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.jobs import JobRunner  # noqa: E402
from fer_core.training import TrainConfig, start_training, train_spec  # noqa: E402
from tests.factories import ROOT  # noqa: E402
from tests.factories import pattern_faces  # noqa: E402

NO_AUG = dict(shift=0.0, rotation=0.0, zoom=0.0, contrast=0.0, erasing=0.0)
TINY = dict(arch="vgg", arch_params={"width": 8, "depth": 1, "bn_momentum": 0.8},
            batch_size=16, lr=3e-3, warmup_epochs=0.0, **NO_AUG)


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    from fer_core.data.fer2013 import to_csv_bytes
    faces = pattern_faces(n_per_class=24)
    path = tmp_path_factory.mktemp("data") / "faces.csv"
    path.write_bytes(to_csv_bytes(faces.images, faces.labels, faces.split))
    return path


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "fer_core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _epochs(job) -> list[int]:
    return [e.epoch for e in job.events()[0] if e.type == "metric"]


def test_cli_resume_against_a_running_app_job_is_refused_then_takes_over(toy_csv, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    job = start_training(JobRunner(tmp_path / "runs"),
                         train_spec(toy_csv, TrainConfig(**TINY, epochs=500)), run_dir)
    try:
        deadline = time.monotonic() + 300
        while not _epochs(job):
            assert job.running and time.monotonic() < deadline, job.state()
            time.sleep(0.2)
        pid = job.state()["pid"]
        r = _cli("train", toy_csv, "--resume", run_dir, "--epochs", 3, "--quiet", "--json")
        assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
        holder = f"being written by pid {pid} on {socket.gethostname()} (train job, since "
        assert holder in r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        r = _cli("swa", toy_csv, run_dir)
        assert r.returncode == 2 and f"pid {pid}" in r.stderr, r.stderr[-2000:]
        assert job.running
    finally:
        if job.running:
            os.kill(job.state()["pid"], signal.SIGKILL)  # a lock left by a killed writer
        assert job.wait(60)
    assert job.state()["status"] == "crashed"
    saved = json.loads((run_dir / "state.json").read_text())["epoch"]
    r = _cli("train", toy_csv, "--resume", run_dir, "--epochs", saved + 1, "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["epochs_done"] == saved + 1
    history = [row["epoch"] for row in runs.read_jsonl(run_dir / "history.jsonl")]
    assert history == list(range(1, saved + 2))  # each epoch once, in order
    assert not (run_dir / runs.RUN_HOLDER).exists()  # released at the end


def test_run_lock_is_reentrant_per_thread_and_exclusive_across_threads(tmp_path):
    seen = []

    def other():
        try:
            with runs.run_lock(tmp_path / "r", "other"):
                seen.append("taken")
        except FerError as e:
            seen.append((e.status, str(e)))

    with runs.run_lock(tmp_path / "r", "first"):
        with runs.run_lock(tmp_path / "r", "nested"):  # the same thread may take it again
            pass
        t = threading.Thread(target=other)
        t.start()
        t.join()
        holder = json.loads((tmp_path / "r" / runs.RUN_HOLDER).read_text())
        assert holder["pid"] == os.getpid() and holder["what"] == "first"
    assert seen == [(409, f"{tmp_path / 'r'}: the run is being written by pid {os.getpid()} on "
                     f"{socket.gethostname()} (first, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['since']))});"
                     " wait until it ends or stop it first")]
    other()  # released: another thread takes it now
    assert seen[-1] == "taken"
