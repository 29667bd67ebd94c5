"""The job runner: a child process per job, events, stop, one job per root, crashes, re-attach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fer_core import jobs
from fer_core.errors import FerError
from fer_core.job_events import Failed, Log, Progress
from tests.factories import ROOT

jobs.register("count", "tests.jobkinds:count")


@pytest.fixture
def runner(tmp_path):
    r = jobs.JobRunner(tmp_path / "root")
    yield r
    job = r.current()
    if job is not None and job.running:
        job.kill()
        job.wait(30)


def _wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _progress(job) -> list[dict]:
    return [e for e in job.events()[0] if isinstance(e, Progress)]


def _start_counting(runner, name="long", n=100000):
    job = runner.start("count", {"n": n, "sleep": 0.02}, runner.root / name)
    _wait_for(lambda: _progress(job), what="the first progress event")
    return job


def test_a_job_runs_in_a_child_process_and_reports_events_and_result(runner):
    job = runner.start("count", {"n": 5, "sleep": 0.01}, runner.root / "one")
    assert job.wait(60)
    state = job.state()
    assert state["status"] == "finished" and state["result"] == {"counted": 5}
    assert state["exit_code"] == 0 and state["signal"] is None and state["error"] is None
    assert state["finished_at"] >= state["started_at"]
    assert any("job finished" in line for line in state["log_tail"])
    events, offset = job.events()
    assert all(isinstance(e, Progress) for e in events)
    assert [e.done for e in events] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 for e in events) and events[-1].eta_sec == 0
    assert events[0].rate > 0 and events[0].eta_sec > 0
    assert events[0].pid != os.getpid()                # the job ran in another process
    assert job.events(offset) == ([], offset)          # nothing new after the offset
    spec = json.loads((runner.root / "one" / "job.json").read_text())
    assert spec["kind"] == "count" and spec["spec"] == {"n": 5, "sleep": 0.01}


def test_finished_jobs_are_forgotten_by_the_starting_process(runner):
    """A long-running starter (the API, a video job every few seconds) keeps no Popen per
    finished job: before, every job's stayed in ``jobs._CHILDREN`` for the process's life."""
    def held():
        with jobs._CHILDREN_LOCK:
            return [k for k in jobs._CHILDREN if k.startswith(str(runner.root.resolve()))]
    for name in ("a", "b", "c"):
        job = runner.start("count", {"n": 2, "sleep": 0.2}, runner.root / name)
        assert held() == [str(job.job_dir)]  # the running one is known (wait, kill, reap)
        assert job.wait(60)
        _wait_for(lambda: not held(), timeout=10, what="the finished job to be forgotten")
        assert job.state()["status"] == "finished"


def test_events_skip_a_line_still_being_written(tmp_path):
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    a, b = '{"type": "log", "stage": "a"}\n', '{"type": "log", "stage": "b"'
    (job_dir / "events.jsonl").write_text(a + b)
    job = jobs.JobHandle(job_dir)
    events, offset = job.events()
    assert events == [Log(stage="a")] and offset == len(a)
    with open(job_dir / "events.jsonl", "a") as f:
        f.write("}\n")
    assert job.events(offset)[0] == [Log(stage="b")]


def test_a_bad_event_line_is_skipped_with_its_reason(tmp_path):
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    good = '{"type": "progress", "done": 1, "total": 2}\n'
    (job_dir / "events.jsonl").write_text(good + 'not json\n{"type": "nope"}\n' + good)
    events, _ = jobs.JobHandle(job_dir).events()
    assert [e.type for e in events] == ["progress", "log", "log", "progress"]
    assert events[1].stage == events[2].stage == "unreadable"
    assert events[1].message.startswith(f"event at byte {len(good)}: event: not JSON")
    assert "unknown event type 'nope'" in events[2].message


def test_events_are_read_in_bounded_chunks(tmp_path, monkeypatch):
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    lines = [json.dumps({"type": "progress", "done": i}) for i in range(100)]
    (job_dir / "events.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(jobs, "MAX_EVENT_BYTES", 200)
    job, seen, offset, calls = jobs.JobHandle(job_dir), [], 0, 0
    while True:
        events, offset = job.events(offset)
        if not events:
            break
        assert len(events) <= 200 // len(lines[0])
        seen += events
        calls += 1
    assert [e.done for e in seen] == list(range(100)) and calls > 10


def test_stop_ends_the_job_cleanly(runner):
    job = _start_counting(runner)
    assert job.running and job.state()["status"] == "running"
    job.stop()
    assert job.wait(60)
    state = job.state()
    assert state["status"] == "stopped" and state["exit_code"] == 0
    assert 0 < state["result"]["counted"] < 100000


def test_sigterm_to_the_job_is_a_stop_request(runner):
    job = _start_counting(runner)
    job.kill(signal.SIGTERM)
    assert job.wait(60)
    assert job.state()["status"] == "stopped"


@pytest.mark.parametrize("spec, error", [({"n": 1, "fail": True}, "spec: the count went wrong"),
                                         ({"n": 1, "boom": True}, "RuntimeError: boom")])
def test_an_error_in_the_job_is_reported_as_failed(runner, spec, error):
    job = runner.start("count", spec, runner.root / "bad")
    assert job.wait(60)
    state = job.state()
    assert state["status"] == "failed" and state["error"] == error and state["exit_code"] == 1
    assert job.events()[0][-1] == Failed(error=error)  # the last event says why
    if "boom" in spec:  # the traceback is in the log, not in the message
        assert "Traceback" in (runner.root / "bad" / "job.log").read_text()


def test_bad_kind_or_spec_is_refused_before_anything_starts(runner):
    with pytest.raises(FerError, match="unknown job kind"):
        runner.start("nope", {}, runner.root / "x")
    with pytest.raises(FerError, match="JSON"):
        runner.start("count", {"n": object()}, runner.root / "x")
    assert not (runner.root / "x").exists() and runner.current() is None


_START_IN_ANOTHER_PROCESS = textwrap.dedent("""
    import json, sys
    from fer_core import jobs
    from fer_core.errors import FerError
    jobs.register("count", "tests.jobkinds:count")
    try:
        job = jobs.JobRunner(sys.argv[1]).start("count", json.loads(sys.argv[3]), sys.argv[2])
        print(json.dumps({"started": str(job.job_dir)}))
    except FerError as e:
        print(json.dumps({"status": e.status, "error": str(e)}))
""")


def _start_in_another_process(root, job_dir, spec) -> dict:
    out = subprocess.run([sys.executable, "-c", _START_IN_ANOTHER_PROCESS, str(root),
                          str(job_dir), json.dumps(spec)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_job_at_a_time_per_root_across_runners_and_processes(runner, tmp_path):
    job = _start_counting(runner)
    with pytest.raises(FerError, match="a count job \\(long\\) is already running") as err:
        jobs.JobRunner(runner.root).start("count", {"n": 1}, runner.root / "second")
    assert err.value.status == 409
    refused = _start_in_another_process(runner.root, runner.root / "third", {"n": 1})
    assert refused["status"] == 409 and "already running" in refused["error"]
    other = jobs.JobRunner(tmp_path / "other-root")      # another root is independent
    assert other.start("count", {"n": 2}, tmp_path / "other-root" / "j").wait(60)
    job.stop()
    assert job.wait(60)
    nxt = jobs.JobRunner(runner.root).start("count", {"n": 2}, runner.root / "next")
    assert nxt.wait(60) and nxt.state()["status"] == "finished"


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_killed_job_is_crashed_with_the_signal_and_the_next_one_may_start(runner, sig):
    job = _start_counting(runner)
    pid = job.state()["pid"]
    assert pid and pid != os.getpid()
    os.kill(pid, sig)
    assert job.wait(60)
    state = job.state()
    name = signal.Signals(sig).name
    assert state["status"] == "crashed" and state["signal"] == name and name in state["error"]
    assert state["log_tail"] and state["log_tail"][0].startswith("job count")
    if sig == signal.SIGSEGV:  # the fault handler's report ends the log
        assert any("Segmentation fault" in line for line in state["log_tail"])
    # the crash is on disk: another runner object (or the app after a restart) sees it
    saved = json.loads((job.job_dir / "job_state.json").read_text())
    assert saved["status"] == "crashed" and saved["signal"] == name
    again = jobs.JobRunner(runner.root).current()
    assert again.job_dir == job.job_dir and again.state()["status"] == "crashed"
    nxt = runner.start("count", {"n": 1}, runner.root / "after")  # the lock died with it
    assert nxt.wait(60) and nxt.state()["status"] == "finished"


def test_a_job_outlives_its_starter_and_is_reattached(tmp_path):
    root = tmp_path / "root"
    started = _start_in_another_process(root, root / "orphan", {"n": 100000, "sleep": 0.02})
    assert "started" in started                              # the starter has exited
    job = jobs.JobRunner(root).current()
    assert job is not None and str(job.job_dir) == started["started"]
    _wait_for(lambda: _progress(job), what="progress from the orphaned job")
    assert job.running and job.kind == "count"
    job.stop()                                               # the control channel still works
    assert job.wait(60)
    assert job.state()["status"] == "stopped"


@pytest.mark.parametrize("sig, status", [(signal.SIGKILL, "interrupted"),
                                         (signal.SIGSEGV, "crashed")])
def test_a_job_that_died_while_no_starter_watched(tmp_path, sig, status):
    """After an app restart nobody saw the exit status: a fatal signal is read from the log,
    anything else (SIGKILL, power loss) shows as interrupted."""
    root = tmp_path / "root"
    _start_in_another_process(root, root / "orphan", {"n": 100000, "sleep": 0.02})
    job = jobs.JobRunner(root).current()
    _wait_for(lambda: _progress(job), what="progress from the orphaned job")
    job.kill(sig)
    assert job.wait(60)
    state = job.state()
    assert state["status"] == status, state
    if status == "crashed":
        assert state["signal"] == "SIGSEGV"
    assert state["log_tail"]
