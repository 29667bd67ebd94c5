"""Long jobs (training, video analysis) in a child process, one at a time per root directory.

A job is a function ``fn(spec: dict, ctx: JobContext) -> dict`` registered under a kind
(:func:`register`). :meth:`JobRunner.start` writes the job's files and starts
``python -m fer_core.jobs JOB_DIR`` in a new session; the child runs the function and the app
only reads files, so a native crash in the job (segfault, out-of-memory kill) ends the child
alone. The job directory holds:

* ``job.json``: kind, the ``module:function`` target and the spec (JSON values only);
* ``job_state.json``: status (running, finished, stopped, failed; crashed or interrupted when
  the child ended without saying so), pid, times, result or error (written atomically);
* ``events.jsonl``: what the job emits (:meth:`JobContext.emit`): typed events of
  :mod:`fer_core.job_events`, one JSON object per line (a ``failed`` event when it raises);
* ``job.log``: the child's stdout and stderr (Python's fault handler writes the stack of a
  fatal signal here);
* ``stop``: created by :meth:`JobHandle.stop`; the job sees it through
  :meth:`JobContext.stop_requested` and ends cleanly (SIGTERM to the child does the same).

One job at a time per root: the child holds an exclusive ``flock`` on ``ROOT/.jobs.lock`` for
its whole life (taken by the starter and handed over, so two starters never both win). The
kernel drops it when the child ends in any way, SIGKILL included. ``ROOT/.jobs-current.json``
names the latest job, so a new :class:`JobRunner` (another session, or the app after a
restart) finds it again: still running (its pid is alive), or ended.

How an end is known: the process that started the child waits for it in a thread and, if the
child ended without writing its final state, records ``crashed`` with the exit code or the
signal name. A job whose starter is gone (the app restarted meanwhile) and whose process ended
without a final state is ``crashed`` when its log shows a fatal signal, else ``interrupted``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

from fer_core import ROOT, atomic, settings
from fer_core.errors import FerError
from fer_core.job_events import Failed, Meter, Progress, eta, lenient, parse, parse_lines

JOB_FILE, STATE_FILE, EVENTS_FILE, LOG_FILE, STOP_FILE = (
    "job.json", "job_state.json", "events.jsonl", "job.log", "stop")
LOCK_FILE, CURRENT_FILE = ".jobs.lock", ".jobs-current.json"
FINAL = ("finished", "stopped", "failed", "crashed", "interrupted")
LOG_TAIL_LINES = 20
MAX_EVENT_BYTES = 4 * 2**20  # read per events() call; the next call goes on from the offset
_LOCK_FD_ENV, _RUN_LOCK_FD_ENV = "FER_JOB_LOCK_FD", "FER_RUN_LOCK_FD"

_KINDS: dict[str, str] = {"train": "fer_core.training.job:run_job",
                          "video": "fer_core.video:run_job",
                          "finetune": "fer_core.finetune:run_job"}
# Kinds whose job directory is a run directory: the starter takes the run's writer lock
# (:func:`fer_core.runs.run_lock`) before it writes anything and hands it to the child.
RUN_WRITERS = {"train", "finetune"}
# Fatal-signal names as Python's fault handler writes them to the log.
_FAULTS = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
           "Floating-point exception": "SIGFPE", "Floating point exception": "SIGFPE",
           "Illegal instruction": "SIGILL"}


def register(kind: str, target: str) -> None:
    """Make ``kind`` run ``target`` ("package.module:function"). The target is stored in the
    job's job.json, so the child finds it without this registry."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise FerError(f"expected 'package.module:function', got {target!r}", where="target")
    _KINDS[kind] = target


def kinds() -> dict[str, str]:
    return dict(_KINDS)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _write_json(path: Path, obj) -> None:
    atomic.write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def log_tail(job_dir, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the job's log (a bounded read of the file's end). When the
    process died of a fatal signal, the fault handler's first line ("Fatal Python error: ...")
    leads the tail, and its list of extension modules is left out."""
    path = Path(job_dir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [ln for ln in text.splitlines()
            if ln.strip() and not ln.startswith("Extension modules:")]
    tail = list(deque(kept, maxlen=lines))
    fatal = next((ln for ln in reversed(kept) if ln.startswith("Fatal Python error:")), None)
    if fatal is not None and fatal not in tail:
        tail = [fatal, *tail[-(lines - 1):]]
    return tail


def _pid_alive(pid, job_dir: Path) -> bool:
    """True if ``pid`` is a live (not zombie) child running this job directory."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return str(job_dir).encode() in cmdline and b"fer_core.jobs" in cmdline
    return process_exists(pid)


def process_exists(pid: int) -> bool:
    """True if a process ``pid`` exists on this host (signal 0; another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ----------------------------------------------------------------------------- parent side

_CHILDREN: dict[str, subprocess.Popen] = {}   # job dir -> the child, in the starting process
_CHILDREN_LOCK = threading.Lock()


def _ended_without_state(job_dir: Path, state: dict, returncode: int | None) -> dict:
    """The state of a job whose process ended without writing a final one."""
    out = {**state, "finished_at": state.get("finished_at") or time.time()}
    if returncode is not None:
        sig = _signal_name(-returncode) if returncode < 0 else None
        out.update(status="crashed", exit_code=None if sig else returncode, signal=sig,
                   error=f"the job process was killed by {sig}" if sig else
                   f"the job process exited with code {returncode} without reporting")
        return out
    tail = "\n".join(log_tail(job_dir, 200))
    fault = next((name for text, name in _FAULTS.items()
                  if f"Fatal Python error: {text}" in tail), None)
    if fault:
        out.update(status="crashed", signal=fault, exit_code=None,
                   error=f"the job process was killed by {fault}")
    else:
        out.update(status="interrupted", error="the job process ended without reporting "
                   "(it was killed, or the machine or app restarted)")
    return out


def _reap(job_dir: Path, proc: subprocess.Popen) -> dict:
    """Wait for the child; record a crash if it ended without its final state; forget it (the
    state file says the rest, so a server starting a job every few seconds keeps no object per
    finished job)."""
    proc.wait()
    with _CHILDREN_LOCK:
        path = job_dir / STATE_FILE
        state = _read_json(path, {}) or {}
        if state.get("status") not in FINAL:
            state = _ended_without_state(job_dir, state, proc.returncode)
            _write_json(path, state)
        if _CHILDREN.get(str(job_dir)) is proc:
            del _CHILDREN[str(job_dir)]
        return state


class JobHandle:
    """One job, read from its directory (works from any process)."""

    def __init__(self, job_dir):
        self.job_dir = Path(job_dir).resolve()
        job = _read_json(self.job_dir / JOB_FILE, {}) or {}
        self.kind: str = job.get("kind", "?")
        self.spec: dict = job.get("spec", {})
        self.root = Path(job.get("root") or self.job_dir.parent)

    def __repr__(self):
        return f"JobHandle({self.kind!r}, {str(self.job_dir)!r})"

    def _proc(self) -> subprocess.Popen | None:
        with _CHILDREN_LOCK:
            return _CHILDREN.get(str(self.job_dir))

    def state(self) -> dict:
        """status, pid, exit_code, signal, error, log_tail, started_at, finished_at, result."""
        state = _read_json(self.job_dir / STATE_FILE, None) or {"status": "interrupted",
                                                               "error": "no job state"}
        if state.get("status") == "running":
            proc = self._proc()
            if proc is not None:
                if proc.poll() is not None:
                    state = _reap(self.job_dir, proc)
            elif not _pid_alive(state.get("pid"), self.job_dir) and \
                    not (state.get("pid") is None and _lock_held(self.root)):
                again = _read_json(self.job_dir / STATE_FILE, {}) or {}
                state = again if again.get("status") in FINAL else \
                    _ended_without_state(self.job_dir, state, None)
        base = {"kind": self.kind, "job_dir": str(self.job_dir), "pid": None, "exit_code": None,
                "signal": None, "error": None, "started_at": None, "finished_at": None,
                "result": None}
        return {**base, **state, "log_tail": log_tail(self.job_dir)}

    @property
    def running(self) -> bool:
        return self.state()["status"] == "running"

    @property
    def status(self) -> str:
        return self.state()["status"]

    def events(self, since: int = 0) -> tuple[list, int]:
        """Typed events (:mod:`fer_core.job_events`) after byte offset ``since`` and the offset
        to read from next time (a line still being written is left for then; at most
        :data:`MAX_EVENT_BYTES` are read). A bad line reads as a ``log`` event saying why."""
        path = self.job_dir / EVENTS_FILE
        try:
            with open(path, "rb") as f:
                f.seek(since)
                data = f.read(MAX_EVENT_BYTES)
        except OSError:
            return [], since
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) == MAX_EVENT_BYTES:  # one oversized line: skip it
            end = len(data)
        return parse_lines(data[:end], since), since + end

    def stop(self) -> None:
        """Ask the job to end cleanly at its next check."""
        atomic.write_text(self.job_dir / STOP_FILE, f"{time.time()}\n")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        proc = self._proc()
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the job's process (tests, and a stuck job)."""
        pid = self.state().get("pid")
        if _pid_alive(pid, self.job_dir):
            os.kill(pid, sig)


def _lock_held(root: Path) -> bool:
    """True if some process holds ``root``'s job lock (a shared probe that never blocks)."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class JobRunner:
    """Starts jobs under ``root`` (one at a time) and finds the current one again."""

    def __init__(self, root):
        self.root = Path(root)

    def current(self) -> JobHandle | None:
        """The running job under root, else the latest one started (None before any)."""
        cur = _read_json(self.root / CURRENT_FILE, None)
        if not isinstance(cur, dict) or not cur.get("job_dir"):
            return None
        job_dir = Path(cur["job_dir"])
        return JobHandle(job_dir) if (job_dir / JOB_FILE).exists() else None

    def start(self, kind: str, spec: dict, job_dir) -> JobHandle:
        """Start ``kind`` on ``spec`` in a child process writing to ``job_dir``.

        FerError (409) if a job already runs under root; (400) for an unknown kind or a spec
        that is not JSON."""
        if kind not in _KINDS:
            raise FerError(f"unknown job kind {kind!r}; expected one of {sorted(_KINDS)}",
                           where="kind")
        try:
            spec_text = json.dumps({"kind": kind, "target": _KINDS[kind], "spec": spec,
                                    "root": str(self.root.resolve()),
                                    "created_at": time.time()}, indent=2)
        except (TypeError, ValueError) as e:
            raise FerError(f"the job spec must hold JSON values only ({e})", where="spec") from None
        self.root.mkdir(parents=True, exist_ok=True)
        job_dir = Path(job_dir).resolve()
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self._lock(fd):
                cur = self.current()
                what = f"a {cur.kind} job ({cur.job_dir.name})" if cur else "a job"
                raise FerError(f"{what} is already running under {self.root}; stop it or wait "
                               "until it ends", where="jobs", status=409)
            run_fd = None
            if kind in RUN_WRITERS:  # a run another process writes: refused, nothing touched
                from fer_core import runs
                run_fd = runs.take_run_lock(job_dir)
            try:
                proc = self._spawn(fd, job_dir, spec_text, run_fd)
                if run_fd is not None:
                    runs.write_holder(job_dir, _run_writer(kind, spec), proc.pid)
            finally:
                if run_fd is not None:
                    os.close(run_fd)  # the child holds the run lock from here on
        finally:
            os.close(fd)  # the child holds the lock from here on
        return JobHandle(job_dir)

    def _lock(self, fd: int, grace: float = 15.0) -> bool:
        """Take the root's lock; while the last job has reported its end but its process is
        still exiting, wait up to ``grace`` seconds for it."""
        deadline = time.monotonic() + grace
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                cur = self.current()
                if cur is None or cur.state()["status"] == "running" or \
                        time.monotonic() > deadline:
                    return False
                time.sleep(0.1)

    def _spawn(self, fd: int, job_dir: Path, spec_text: str,
               run_fd: int | None = None) -> subprocess.Popen:
        job_dir.mkdir(parents=True, exist_ok=True)
        for name in (STOP_FILE, EVENTS_FILE):
            (job_dir / name).unlink(missing_ok=True)
        atomic.write_text(job_dir / JOB_FILE, spec_text + "\n")
        _write_json(job_dir / STATE_FILE, {"status": "running", "pid": None,
                                           "started_at": time.time()})
        _write_json(self.root / CURRENT_FILE, {"job_dir": str(job_dir)})
        fds = {_LOCK_FD_ENV: str(fd)} if run_fd is None else {_LOCK_FD_ENV: str(fd),
                                                               _RUN_LOCK_FD_ENV: str(run_fd)}
        env = settings.child_env({**fds, "PYTHONUNBUFFERED": "1"}, pythonpath=ROOT)
        try:
            with open(job_dir / LOG_FILE, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "fer_core.jobs", str(job_dir)],
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env,
                                        pass_fds=tuple(int(v) for v in fds.values()),
                                        start_new_session=True)
        except OSError as e:
            _write_json(job_dir / STATE_FILE, {"status": "failed", "error": str(e),
                                               "finished_at": time.time()})
            raise FerError(f"cannot start the job process: {e}", where="jobs",
                           status=500) from None
        with _CHILDREN_LOCK:
            _CHILDREN[str(job_dir)] = proc
        threading.Thread(target=_reap, args=(job_dir, proc), daemon=True,
                         name=f"fer-job-reaper-{proc.pid}").start()
        return proc


# ----------------------------------------------------------------------------- child side


class JobContext:
    """What a job function gets in the child: where to write, how to report, when to stop."""

    def __init__(self, job_dir):
        self.job_dir = Path(job_dir)
        self._events = open(self.job_dir / EVENTS_FILE, "a", encoding="utf-8")
        self._stop = False
        self._meter = Meter()
        self._meter.update(0)

    def emit(self, event) -> None:
        """Append ``event`` (a :mod:`fer_core.job_events` event, or a dict one parses to) to
        events.jsonl, flushed."""
        if isinstance(event, dict):
            event = parse(event)
        self._events.write(event.to_json() + "\n")
        self._events.flush()

    def progress(self, done, total, rate=None, **extra) -> None:
        """A progress event; the rate (when not given) and the ETA from the job's start."""
        measured, _ = self._meter.update(done)
        rate = measured if rate is None else rate
        self.emit(Progress(done=done, total=total, rate=rate, eta_sec=eta(done, total, rate),
                           **extra))

    def stop_requested(self) -> bool:
        if not self._stop and (self.job_dir / STOP_FILE).exists():
            self._stop = True
        return self._stop

    def request_stop(self, *_):
        self._stop = True

    def close(self) -> None:
        self._events.close()


def _run_writer(kind: str, spec: dict) -> str:
    """What an app job writing a run calls itself in the run's holder file."""
    return f"{kind}{' --resume' if spec.get('resume') else ''} job"


def _run_lock(job_dir: Path, what: str, fd):
    """The run lock handed down by the starter (held until the job function returns), or
    nothing for a job that writes no run."""
    if fd is None:
        return contextlib.nullcontext()
    from fer_core import runs
    return runs.run_lock(job_dir, what, inherited_fd=int(fd))


def child_main(job_dir) -> int:
    """Run the job of ``job_dir`` in this process (the child); returns the exit code."""
    job_dir = Path(job_dir)
    fd = settings.take_env(_LOCK_FD_ENV)
    if fd is not None:
        os.set_inheritable(int(fd), False)  # the lock is this process's alone
    run_fd = settings.take_env(_RUN_LOCK_FD_ENV)
    if run_fd is not None:
        os.set_inheritable(int(run_fd), False)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    job = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
    started = (_read_json(job_dir / STATE_FILE, {}) or {}).get("started_at") or time.time()
    _write_json(job_dir / STATE_FILE, {"status": "running", "pid": os.getpid(),
                                       "started_at": started})
    ctx = JobContext(job_dir)
    signal.signal(signal.SIGTERM, ctx.request_stop)
    print(f"job {job['kind']} ({job['target']}) pid {os.getpid()}", flush=True)
    state = {"pid": os.getpid(), "started_at": started}
    try:
        with _run_lock(job_dir, _run_writer(job["kind"], job["spec"]), run_fd):
            result = _resolve(job["target"])(job["spec"], ctx)
        said = (result or {}).get("status") if isinstance(result, dict) else None
        stopped = said == "stopped" or (said is None and ctx.stop_requested())
        state.update(status="stopped" if stopped else "finished", result=result, exit_code=0)
    except FerError as e:
        print(f"failed: {e}", flush=True)
        state.update(status="failed", error=str(e), exit_code=1)
    except Exception as e:  # reported as the job's error, the traceback goes to the log
        traceback.print_exc()
        state.update(status="failed", error=f"{type(e).__name__}: {e}", exit_code=1)
    finally:
        if state.get("status") == "failed":
            ctx.emit(Failed(error=state["error"]))
        ctx.close()
    state["finished_at"] = time.time()
    try:
        json.dumps(state)
    except (TypeError, ValueError):
        state["result"] = json.loads(json.dumps(state.get("result"), default=lenient))
    _write_json(job_dir / STATE_FILE, state)
    print(f"job {state['status']}", flush=True)
    return state["exit_code"]


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
