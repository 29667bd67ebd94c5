"""Video analysis jobs: the one store the Video page and the REST API both use (start, list,
status, results, pruning and time to live), with the one list of accepted video suffixes.

A store is a folder; each job is a subfolder named by its id (32 hex digits)::

    <id>/.reserved    while its slot is reserved and the input is read and probed (pid, host)
    <id>/meta.json    name, created_at, size, probe (written once the input is accepted)
    <id>/input.<ext>  the uploaded video (a file already on disk is read where it is)
    <id>/job/         the job directory of :mod:`fer_core.jobs` (state, events, log) and the
                      results: frames.csv, summary.json, annotated.mp4 (see fer_core.video)

Each job folder is its own :class:`~fer_core.jobs.JobRunner` root, and the jobs in flight
(running, or reserved by an input still being read) are at most ``max_jobs``: they are counted
and a slot reserved under an exclusive ``flock`` on ``<store>/.slots.lock``, so the limit holds
across processes (``serve --workers N``, several servers sharing the folder, the app).

Old jobs go at each reservation: finished ones older than ``ttl_hours`` (the API's
``FER_VIDEO_TTL_HOURS``), all but the ``keep`` newest (the page keeps 5), and reservations whose
process died. A running job is never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

from fer_core import jobs
from fer_core.errors import FerError
from fer_core.job_events import Progress

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts")
RESERVED, META, JOB, SLOTS_LOCK = ".reserved", "meta.json", "job", ".slots.lock"
_ID = re.compile(r"^[0-9a-f]{32}$")
FOREIGN_RESERVATION_SEC = 3600  # a reservation of another host counts this long


class TooManyJobs(FerError):
    """All of the store's slots are taken (HTTP 429)."""

    def __init__(self, max_jobs: int):
        super().__init__(f"{max_jobs} video job(s) already running; try again when one has "
                         "finished", where="videos", status=429)


def input_suffix(name: str | None) -> str:
    """The suffix an input named ``name`` is stored with (``.bin`` for any other)."""
    suffix = Path(name or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else ".bin"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class VideoJobStore:
    """Video jobs under ``root`` (see the module's docstring)."""

    def __init__(self, root, *, max_jobs: int = 1, ttl_hours: float | None = None,
                 keep: int | None = None):
        self.root, self.max_jobs = Path(root), int(max_jobs)
        self.ttl_hours, self.keep = ttl_hours, keep

    def __repr__(self):
        return f"VideoJobStore({str(self.root)!r}, max_jobs={self.max_jobs})"

    # ------------------------------------------------------------------ finding jobs

    def path(self, vid: str) -> Path:
        """The folder of job ``vid``; FerError 404 for a malformed, unknown or expired id."""
        if not isinstance(vid, str) or not _ID.match(vid):
            raise FerError("no such video job", where=str(vid)[:40], status=404)
        d = self.root / vid
        if not (d / META).is_file():
            raise FerError("no such video job (unknown id, or expired)", where=vid, status=404)
        return d

    def meta(self, vid: str) -> dict:
        return _read_json(self.path(vid) / META) or {}

    def ids(self) -> list[str]:
        """The ids of accepted jobs, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            meta = _read_json(d / META) if _ID.match(d.name) else None
            if isinstance(meta, dict):
                found.append((float(meta.get("created_at") or 0), d.name))
        return [vid for _, vid in sorted(found, reverse=True)]

    def latest(self) -> str | None:
        """The newest job's id (running or ended), or None."""
        return next(iter(self.ids()), None)

    def handle(self, vid: str) -> jobs.JobHandle | None:
        """The job's :class:`~fer_core.jobs.JobHandle` (None while it is not started)."""
        return jobs.JobRunner(self.path(vid)).current()

    def is_running(self, vid: str) -> bool:
        try:
            h = self.handle(vid)
        except FerError:  # deleted meanwhile (another process pruned it)
            return False
        return h is not None and h.running

    def stop(self, vid: str) -> None:
        """Ask job ``vid`` to end (what was analysed so far is kept)."""
        h = self.handle(vid)
        if h is not None:
            h.stop()

    # ------------------------------------------------------------------ slots

    def _reservation_alive(self, d: Path) -> bool:
        """True while the process that reserved ``d``'s slot (this host) is alive."""
        try:
            holder = json.loads((d / RESERVED).read_text())
            pid, host, since = int(holder["pid"]), holder["host"], float(holder["since"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if host != socket.gethostname():  # another server sharing the folder
            return time.time() - since < FOREIGN_RESERVATION_SEC
        return jobs.process_exists(pid)

    def in_flight(self) -> int:
        """Jobs running, or reserved by an input still being read and probed."""
        if not self.root.is_dir():
            return 0
        n = 0
        for d in self.root.iterdir():
            if (d / RESERVED).is_file() and self._reservation_alive(d):
                n += 1
            elif (d / META).is_file() and _ID.match(d.name) and self.is_running(d.name):
                n += 1
        return n

    def states(self) -> dict[str, int]:
        """How many jobs are in each state (``/metrics``' ``fer_video_jobs``)."""
        counts: dict[str, int] = {}
        for vid in self.ids():
            try:
                h = self.handle(vid)
            except FerError:  # deleted meanwhile
                continue
            state = h.state().get("status", "queued") if h is not None else "queued"
            counts[state] = counts.get(state, 0) + 1
        return counts

    @contextlib.contextmanager
    def _slots_lock(self):
        """An exclusive flock on ``<root>/.slots.lock`` (every process sharing the folder), held
        only while the jobs in flight are counted and a slot is reserved."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / SLOTS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def reserve(self) -> str:
        """Prune old jobs, then count the jobs in flight and reserve a slot under one lock: a new
        job folder holding a ``.reserved`` file naming this process. Returns its id;
        :class:`TooManyJobs` (429) when every slot is taken."""
        self.prune(room=1)
        with self._slots_lock():
            if self.in_flight() >= self.max_jobs:
                raise TooManyJobs(self.max_jobs)
            vid = uuid.uuid4().hex
            d = self.root / vid
            d.mkdir()
            (d / RESERVED).write_text(json.dumps({"pid": os.getpid(), "since": time.time(),
                                                  "host": socket.gethostname()}))
        return vid

    def discard(self, vid: str) -> None:
        """Delete a reserved (refused or failed) job's folder: its slot is free again."""
        if _ID.match(vid):
            shutil.rmtree(self.root / vid, ignore_errors=True)

    def input_path(self, vid: str, name: str | None) -> Path:
        """Where a reserved job's uploaded input goes."""
        return self.root / vid / f"input{input_suffix(name)}"

    # ------------------------------------------------------------------ starting

    def accept(self, vid: str, name: str, src, size: int | None = None,
               max_seconds: float | None = None) -> dict:
        """Probe the reserved job's input ``src`` and record it (meta.json); the probe.
        FerError: not a video, no frames, a codec (from :func:`fer_core.video.probe`), or (413)
        longer than ``max_seconds``."""
        from fer_core import video

        info = video.probe(src, name=name)
        if max_seconds and info["duration_s"] and info["duration_s"] > max_seconds:
            raise FerError(f"video is {info['duration_s']:.1f} s long; the limit is "
                           f"{max_seconds:g} s", where=name, status=413)
        size = Path(src).stat().st_size if size is None else size
        meta = {"name": name, "created_at": time.time(), "size": size, "probe": info}
        (self.root / vid / META).write_text(json.dumps(meta))
        return info

    def start(self, vid: str, src, *, name: str, model=None, every: int = 5,
              smoothing: float = 0.0, annotate: bool = False, detector: str | None = None,
              max_duration_s: float | None = None) -> jobs.JobHandle:
        """Start the accepted job ``vid`` on ``src`` (a ``"video"`` job in a child process);
        from here on the running job holds its slot."""
        d = self.root / vid
        spec = {"input": str(src), "out_dir": str(d / JOB), "name": name,
                "model": str(model) if model else None, "every": int(every),
                "smoothing": float(smoothing), "annotate": bool(annotate),
                "max_duration_s": max_duration_s, "detector": detector}
        (d / JOB).mkdir(exist_ok=True)
        handle = jobs.JobRunner(d).start("video", spec, d / JOB)
        (d / RESERVED).unlink(missing_ok=True)
        return handle

    def submit(self, name: str, *, data: bytes | None = None, path=None, **options) -> str:
        """Reserve, store or point at the input (``data`` or a file ``path``), probe and start
        in one call (the page's way; the API streams its upload between these steps). The id;
        FerError as :meth:`reserve`, :meth:`accept` and :meth:`start` say."""
        vid = self.reserve()
        try:
            if data is not None:
                src = self.input_path(vid, name)
                src.write_bytes(data)
            else:
                src = Path(path)
            self.accept(vid, name, src)
            self.start(vid, src, name=name, **options)
        except BaseException:
            self.discard(vid)
            raise
        return vid

    # ------------------------------------------------------------------ reading

    def status(self, vid: str) -> dict:
        """id, status (queued until the child runs), running, name, created_at, progress (done,
        total, fraction, eta_sec, fps), error, signal, log_tail, summary (once finished or
        stopped; its video path is the input's name) and job_dir."""
        meta, d = self.meta(vid), self.path(vid)
        h = self.handle(vid)
        state = h.state() if h is not None else {"status": "queued"}
        status = state.get("status") or "queued"
        last = None
        if h is not None:
            last = next((e for e in reversed(h.events(0)[0]) if isinstance(e, Progress)), None)
        progress = {"done": 0, "total": None, "fraction": None, "eta_sec": None, "fps": None}
        if last is not None:
            progress.update(done=last.done, total=last.total, eta_sec=last.eta_sec, fps=last.rate,
                            fraction=round(last.fraction, 4) if last.total else None)
        error = state.get("error")
        if status in ("crashed", "interrupted") and not error:
            error = f"the analysis process ended unexpectedly ({state.get('signal') or 'no signal'})"
        summary = None
        if status in ("finished", "stopped") and (d / JOB / "summary.json").is_file():
            summary = json.loads((d / JOB / "summary.json").read_text())
            summary["video"]["path"] = meta.get("name")
        return {"id": vid, "status": status, "running": status == "running",
                "name": meta.get("name") or "video", "created_at": meta.get("created_at"),
                "progress": progress, "error": error, "signal": state.get("signal"),
                "log_tail": state.get("log_tail") or [], "summary": summary, "job_dir": d / JOB}

    def result_file(self, vid: str, name: str) -> Path:
        """A result file of a finished job. FerError 409 while the job is queued or running,
        404 when it ended without that file."""
        d = self.path(vid) / JOB
        f = d / name
        if f.is_file() and (d / "summary.json").is_file():
            return f
        status = self.status(vid)["status"]
        if status in ("queued", "running"):
            raise FerError(f"the analysis is still {status}", where=vid, status=409)
        raise FerError(f"no {name} for this job ({status})", where=vid, status=404)

    # ------------------------------------------------------------------ pruning

    def prune(self, now: float | None = None, room: int = 0) -> list[str]:
        """Delete jobs that are not running: older than the time to live, and all but the
        ``keep - room`` newest; also reservations whose process died. The deleted ids."""
        now = time.time() if now is None else now
        if not self.root.is_dir():
            return []
        for d in self.root.iterdir():
            if (d / RESERVED).is_file() and not (d / META).is_file() and \
                    not self._reservation_alive(d):
                shutil.rmtree(d, ignore_errors=True)  # its process died while reading the input
        gone = []
        for i, vid in enumerate(self.ids()):
            try:
                age = now - (self.root / vid / META).stat().st_mtime
            except OSError:  # deleted meanwhile by another process pruning
                continue
            expired = self.ttl_hours is not None and age >= self.ttl_hours * 3600
            surplus = self.keep is not None and i >= max(0, self.keep - room)
            if (expired or surplus) and not self.is_running(vid) and \
                    not self._reservation_alive(self.root / vid):  # not between accept and start
                shutil.rmtree(self.root / vid, ignore_errors=True)
                gone.append(vid)
        return gone
