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

import os
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fer_core.api import errors
from fer_core.api.deps import ServiceDep, SettingsDep, media_type, read_form, unsupported_body
from fer_core.api.errors import ApiError
from fer_core.api.service import ModelService
from fer_core.errors import FerError
from fer_core.resolve import resolve_model
from fer_core.settings import Settings
from fer_core.video_jobs import JOB, TooManyJobs, VideoJobStore

router = APIRouter(tags=["videos"])

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


def store_of(s: Settings) -> VideoJobStore:
    """The video job store of ``FER_VIDEO_DIR`` (the one the Video page uses too)."""
    return VideoJobStore(s.video_dir, max_jobs=s.video_max_jobs, ttl_hours=s.video_ttl_hours)


def _status(store: VideoJobStore, vid: str) -> dict:
    """GET /v1/videos/{id}: the store's status, with links to the results once there (a
    FerError 404 for an unknown id)."""
    st = store.status(vid)
    links = {"self": f"/v1/videos/{vid}"}
    if st["summary"] is not None:
        links["frames_csv"] = f"/v1/videos/{vid}/frames.csv"
        links["summary_json"] = f"/v1/videos/{vid}/summary.json"
        if st["summary"].get("outputs", {}).get("annotated"):
            links["annotated"] = f"/v1/videos/{vid}/annotated"
    return VideoJob(id=vid, status=st["status"], name=st["name"], created_at=st["created_at"],
                    progress=VideoProgress(**st["progress"]), error=st["error"],
                    summary=st["summary"], links=links).model_dump()


def job_states(s: Settings) -> dict[str, int]:
    """How many video jobs are in each state (``/metrics``' ``fer_video_jobs``)."""
    return store_of(s).states()


def _safe_name(name: str | None) -> str:
    base = os.path.basename(name or "") or "upload"
    return re.sub(r"[^\w.\- ]", "_", base)[:120]


@router.post("/videos", status_code=202, response_model=VideoJob, openapi_extra=UPLOAD_BODY,
             responses=errors.responses(400, 413, 415, 422, 429, 503),
             summary="Start analysing a video: per-face emotions over time")
async def create_video(request: Request, s: SettingsDep, service: ServiceDep):
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise unsupported_body(kind, "multipart/form-data with a 'file' field")
    store = store_of(s)
    try:
        vid = await run_in_threadpool(store.reserve)  # pruned first: TTL, dead reservations
    except TooManyJobs as e:
        raise ApiError("too_many_jobs", str(e), 429) from None
    try:
        await _read_and_start(request, s, store, vid, service)
    except BaseException:
        store.discard(vid)  # refused or failed: the slot is free again
        raise
    return await run_in_threadpool(_status, store, vid)


async def _read_and_start(request: Request, s: Settings, store: VideoJobStore, vid: str,
                          service: ModelService) -> None:
    """Stream the upload into the reserved job ``vid``, probe it and start its job."""
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
        name = _safe_name(upload.filename)
        dest = store.input_path(vid, name)
        size = 0
        with open(dest, "wb") as f:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError("too_large", f"video larger than the {s.video_max_mb:g} MB "
                                   "limit", 413, where=name)
                f.write(chunk)
    try:
        await run_in_threadpool(store.accept, vid, name, dest, size, s.video_max_seconds)
    except FerError as e:
        if e.status == 413:
            raise ApiError("too_long", str(e), 413) from None
        raise ApiError("not_a_video" if e.status == 400 else "bad_video", str(e), 415) from None
    # the model this instance serves now (a promoted one after promote), else FER_MODEL
    model = service.predictor.model_path if service.loaded else resolve_model(None, s)
    await run_in_threadpool(lambda: store.start(
        vid, dest, name=name, model=model, every=every, smoothing=smoothing, annotate=annotate,
        max_duration_s=s.video_max_seconds,
        detector=s.detector))  # FER_DETECTOR (None: the default)


@router.get("/videos/{vid}", response_model=VideoJob, responses=errors.responses(404),
            summary="Status, progress, and the summary once the analysis is done")
async def get_video(vid: str, s: SettingsDep):
    return await run_in_threadpool(_status, store_of(s), vid)


def _result(s: Settings, vid: str, name: str) -> Path:
    try:
        return store_of(s).result_file(vid, name)
    except FerError as e:
        raise ApiError("not_ready" if e.status == 409 else "not_found", str(e), e.status) from None


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
    job_dir = await run_in_threadpool(store_of(s).path, vid) / JOB
    for name, mt in (("annotated.mp4", "video/mp4"), ("annotated.webm", "video/webm")):
        if (job_dir / name).is_file():
            return FileResponse(job_dir / name, media_type=mt, filename=f"{vid}-{name}")
    await run_in_threadpool(_result, s, vid, "annotated.mp4")  # 409 or 404
