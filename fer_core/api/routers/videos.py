"""Video jobs: ``POST /v1/videos`` (multipart ``file``) -> 202 + id; ``GET /v1/videos/{id}``
(status, progress, summary when done); ``GET /v1/videos/{id}/frames.csv``, ``.../summary.json``
and ``.../annotated``. Jobs and their files are deleted after a time to live.

Each video runs as a ``"video"`` job (:func:`fer_core.video.run_job`) in a child process started
by :mod:`fer_core.jobs`, one job root per video under ``FER_VIDEO_DIR``, so the server only
streams the upload to disk and reads the job's state and events. Limits (the app's
:class:`fer_core.settings.Settings`, from the environment):

``FER_VIDEO_DIR``          where uploads and results live (default ``<tmp>/fer-api-videos``)
``FER_VIDEO_MAX_MB``       largest upload (default 200; it replaces the API's request-body limit
                           ``FER_MAX_UPLOAD_MB`` on this route)
``FER_VIDEO_MAX_SECONDS``  longest video accepted (default 600)
``FER_VIDEO_MAX_JOBS``     video jobs running at once (default 1; more answer 429). Counted and
                           reserved under a file lock on ``FER_VIDEO_DIR`` before the upload is
                           read, so the limit holds across ``serve --workers N`` and several
                           servers sharing the folder
``FER_VIDEO_TTL_HOURS``    finished jobs (files included) are deleted after this, checked at each
                           upload (default 24)
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

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fer_core import jobs
from fer_core.api import errors
from fer_core.api.deps import ServiceDep, SettingsDep, media_type, read_form, unsupported_body
from fer_core.api.errors import ApiError
from fer_core.api.service import ModelService
from fer_core.errors import FerError
from fer_core.resolve import resolve_model
from fer_core.settings import Settings

router = APIRouter(tags=["videos"])

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts")
_ID = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1024 * 1024


class VideoProgress(BaseModel):
    done: int = 0
    total: int | None = None
    fraction: float | None = None
    eta_sec: float | None = None
    fps: float | None = None


class VideoJob(BaseModel):
    id: str
    status: str
    name: str
    created_at: float
    progress: VideoProgress
    error: str | None = None
    summary: dict | None = None
    links: dict[str, str]


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "every": {"type": "integer", "minimum": 1, "default": 5,
                             "description": "analyse every N-th frame"},
                   "smoothing": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                                 "default": 0},
                   "annotate": {"type": "boolean", "default": False}}}}}}}


def _dir(s: Settings, vid: str) -> Path:
    if not _ID.match(vid):
        raise ApiError("not_found", "no such video job", 404, where=vid)
    d = s.video_dir / vid
    if not (d / "meta.json").is_file():
        raise ApiError("not_found", "no such video job (unknown id, or expired)", 404, where=vid)
    return d


def _handle(d: Path):
    return jobs.JobRunner(d).current()


def _describe(d: Path) -> dict:
    meta = json.loads((d / "meta.json").read_text())
    vid = d.name
    handle = _handle(d)
    state = handle.state() if handle is not None else {"status": "queued"}
    status = state.get("status") or "queued"
    progress = VideoProgress()
    if handle is not None:
        events, _ = handle.events(0)
        last = next((e for e in reversed(events) if e.get("type") == "progress"), None)
        if last:
            total = last.get("total")
            done = int(last.get("done") or 0)
            progress = VideoProgress(done=done, total=total, eta_sec=last.get("eta_sec"),
                                     fps=last.get("fps"),
                                     fraction=round(min(1.0, done / total), 4) if total else None)
    summary = None
    if (d / "job" / "summary.json").is_file() and status in ("finished", "stopped"):
        summary = json.loads((d / "job" / "summary.json").read_text())
        summary["video"]["path"] = meta["name"]
    error = state.get("error")
    if status in ("crashed", "interrupted") and not error:
        error = f"the analysis process ended unexpectedly ({state.get('signal') or 'no signal'})"
    links = {"self": f"/v1/videos/{vid}"}
    if summary is not None:
        links["frames_csv"] = f"/v1/videos/{vid}/frames.csv"
        links["summary_json"] = f"/v1/videos/{vid}/summary.json"
        if summary.get("outputs", {}).get("annotated"):
            links["annotated"] = f"/v1/videos/{vid}/annotated"
    return VideoJob(id=vid, status=status, name=meta["name"], created_at=meta["created_at"],
                    progress=progress, error=error, summary=summary, links=links).model_dump()


RESERVED = ".reserved"  # in a job folder between the slot's reservation and the job's start
SLOTS_LOCK = ".slots.lock"


def _reservation_alive(d: Path) -> bool:
    """True while the server process that reserved ``d``'s slot (this host) is alive."""
    try:
        holder = json.loads((d / RESERVED).read_text())
        pid, host, since = int(holder["pid"]), holder["host"], float(holder["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():  # another server sharing the folder: trust it an hour
        return time.time() - since < 3600
    return jobs.process_exists(pid)


def _running(s: Settings) -> int:
    """Video jobs in flight: running, or reserved by an upload still being read and probed."""
    n = 0
    if not s.video_dir.is_dir():
        return 0
    for d in s.video_dir.iterdir():
        if (d / RESERVED).is_file() and _reservation_alive(d):
            n += 1
        elif (d / "meta.json").is_file():
            h = _handle(d)
            if h is not None and h.running:
                n += 1
    return n


def job_states(s: Settings) -> dict[str, int]:
    """How many video jobs are in each state (``/metrics``' ``fer_video_jobs``)."""
    counts: dict[str, int] = {}
    if not s.video_dir.is_dir():
        return counts
    for d in s.video_dir.iterdir():
        if (d / "meta.json").is_file():
            h = _handle(d)
            state = h.state().get("status", "queued") if h is not None else "queued"
            counts[state] = counts.get(state, 0) + 1
    return counts


@contextlib.contextmanager
def _slots_lock(s: Settings):
    """An exclusive flock on ``FER_VIDEO_DIR/.slots.lock`` (every worker and server sharing the
    folder), held only while the jobs in flight are counted and a slot is reserved."""
    s.video_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(s.video_dir / SLOTS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def reserve_slot(s: Settings, vid: str) -> Path:
    """Count the jobs in flight and reserve one slot for job ``vid`` under one lock: its folder
    with a ``.reserved`` file naming this process. ApiError 429 when all slots are taken."""
    with _slots_lock(s):
        if _running(s) >= s.video_max_jobs:
            raise ApiError("too_many_jobs", f"{s.video_max_jobs} video job(s) already running; try "
                           "again when one has finished", 429)
        d = s.video_dir / vid
        d.mkdir()
        (d / RESERVED).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                              "since": time.time()}))
    return d


def cleanup(s: Settings, now: float | None = None) -> list[str]:
    """Delete job folders older than the time to live that are not running; their ids."""
    now = time.time() if now is None else now
    gone = []
    if not s.video_dir.is_dir():
        return gone
    for d in s.video_dir.iterdir():
        meta = d / "meta.json"
        if (d / RESERVED).is_file() and not meta.is_file() and not _reservation_alive(d):
            shutil.rmtree(d, ignore_errors=True)  # its server died while reading the upload
            continue
        if not meta.is_file() or now - meta.stat().st_mtime < s.video_ttl_hours * 3600:
            continue
        h = _handle(d)
        if h is not None and h.running:
            continue
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d.name)
    return gone


def _safe_name(name: str | None) -> tuple[str, str]:
    base = os.path.basename(name or "") or "upload"
    base = re.sub(r"[^\w.\- ]", "_", base)[:120]
    suffix = Path(base).suffix.lower()
    return base, suffix


@router.post("/videos", status_code=202, response_model=VideoJob, openapi_extra=UPLOAD_BODY,
             responses=errors.responses(400, 413, 415, 422, 429, 503),
             summary="Start analysing a video: per-face emotions over time")
async def create_video(request: Request, s: SettingsDep, service: ServiceDep):
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise unsupported_body(kind, "multipart/form-data with a 'file' field")
    await run_in_threadpool(cleanup, s)
    vid = uuid.uuid4().hex
    d = await run_in_threadpool(reserve_slot, s, vid)
    try:
        await _read_and_start(request, s, d, service)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)  # refused or failed: the slot is free again
        raise
    (d / RESERVED).unlink(missing_ok=True)  # the running job counts from here on
    return await run_in_threadpool(_describe, d)


async def _read_and_start(request: Request, s: Settings, d: Path,
                          service: ModelService) -> None:
    """Stream the upload into the reserved folder ``d``, probe it and start its job."""
    limit = int(s.video_max_mb * 1024 * 1024)
    async with read_form(request, max_files=1) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError("missing_file", "multipart field 'file' must be a video file upload",
                           422)
        try:
            every = int(form.get("every") or 5)
            smoothing = float(form.get("smoothing") or 0.0)
        except ValueError:
            raise ApiError("invalid_request", "every must be an integer and smoothing a number",
                           422) from None
        annotate = str(form.get("annotate") or "").lower() in ("1", "true", "yes", "on")
        if every < 1 or not 0 <= smoothing < 1:
            raise ApiError("invalid_request", "every must be >= 1 and smoothing in [0, 1)", 422)
        name, suffix = _safe_name(upload.filename)
        if suffix not in VIDEO_SUFFIXES:
            suffix = ".bin"
        dest = d / f"input{suffix}"
        size = 0
        with open(dest, "wb") as f:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError("too_large", f"video larger than the {s.video_max_mb:g} MB "
                                   "limit", 413, where=name)
                f.write(chunk)
    from fer_core import video
    try:
        info = await run_in_threadpool(video.probe, dest, name)
    except FerError as e:
        raise ApiError("not_a_video" if e.status == 400 else "bad_video", str(e), 415) from None
    if info["duration_s"] and info["duration_s"] > s.video_max_seconds:
        raise ApiError("too_long", f"video is {info['duration_s']:.1f} s long; the limit is "
                       f"{s.video_max_seconds:g} s", 413, where=name)
    meta = {"name": name, "created_at": time.time(), "size": size, "probe": info}
    (d / "meta.json").write_text(json.dumps(meta))
    # the model this instance serves now (a promoted one after promote), else FER_MODEL
    model = service.predictor.model_path if service.loaded else resolve_model(None, s)
    spec = {"input": str(dest), "out_dir": str(d / "job"), "name": name,
            "model": str(model), "every": every, "smoothing": smoothing,
            "annotate": annotate, "max_duration_s": s.video_max_seconds,
            "detector": s.detector}  # FER_DETECTOR (None: the default)
    (d / "job").mkdir()
    await run_in_threadpool(jobs.JobRunner(d).start, "video", spec, d / "job")


@router.get("/videos/{vid}", response_model=VideoJob, responses=errors.responses(404),
            summary="Status, progress, and the summary once the analysis is done")
async def get_video(vid: str, s: SettingsDep):
    d = _dir(s, vid)
    return await run_in_threadpool(_describe, d)


def _result(s: Settings, vid: str, name: str) -> Path:
    d = _dir(s, vid)
    f = d / "job" / name
    if not f.is_file() or not (d / "job" / "summary.json").is_file():
        state = _describe(d)
        if state["status"] in ("queued", "running"):
            raise ApiError("not_ready", f"the analysis is still {state['status']}", 409)
        raise ApiError("not_found", f"no {name} for this job ({state['status']})", 404)
    return f


@router.get("/videos/{vid}/frames.csv", responses={
    200: {"content": {"text/csv": {}}, "description": "one row per face per analysed frame"},
    **errors.responses(404, 409)}, summary="The per-frame, per-face table (CSV)")
async def get_frames(vid: str, s: SettingsDep):
    f = await run_in_threadpool(_result, s, vid, "frames.csv")
    return FileResponse(f, media_type="text/csv", filename=f"{vid}-frames.csv")


@router.get("/videos/{vid}/summary.json", responses=errors.responses(404, 409),
            summary="The summary (also part of GET /v1/videos/{id} when done)")
async def get_summary(vid: str, s: SettingsDep):
    f = await run_in_threadpool(_result, s, vid, "summary.json")
    return FileResponse(f, media_type="application/json", filename=f"{vid}-summary.json")


@router.get("/videos/{vid}/annotated", responses={
    200: {"content": {"video/mp4": {}, "video/webm": {}}}, **errors.responses(404, 409)},
    summary="The annotated video (when requested with annotate=true)")
async def get_annotated(vid: str, s: SettingsDep):
    d = _dir(s, vid)
    for name, mt in (("annotated.mp4", "video/mp4"), ("annotated.webm", "video/webm")):
        if (d / "job" / name).is_file():
            return FileResponse(d / "job" / name, media_type=mt, filename=f"{vid}-{name}")
    await run_in_threadpool(_result, s, vid, "annotated.mp4")  # 409 or 404
