"""POST /v1/feedback and GET /v1/feedback/export."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from fer_core.api import errors
from fer_core.api.deps import (ApiKeyDep, BudgetDep, ServiceDep, StoreDep, media_type,
                               read_form, read_json, unsupported_body, upload_bytes)
from fer_core.api.errors import ApiError
from fer_core.api.imaging import b64decode, declared_pixels
from fer_core.api.schemas import FeedbackJSON, FeedbackResponse
from fer_core.settings import parse_flag
from fer_core.errors import FerError

router = APIRouter(tags=["feedback"], dependencies=[ApiKeyDep])

_FORM = {"type": "object", "required": ["label"], "properties": {
    "label": {"type": "string", "minLength": 1, "maxLength": 32},
    "prediction_id": {"type": "string", "maxLength": 64},
    "file": {"type": "string", "format": "binary"},
    "detect": {"type": "boolean"},
    "note": {"type": "string", "maxLength": 2000},
}}
FEEDBACK_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": FeedbackJSON.model_json_schema()},
    "multipart/form-data": {"schema": _FORM},
    "application/x-www-form-urlencoded": {"schema": {
        **_FORM, "properties": {k: v for k, v in _FORM["properties"].items() if k != "file"}}},
}}}


@contextlib.contextmanager
def _unavailable_as_503():
    """The store's "database unreachable" error as 503 ``feedback_unavailable``."""
    try:
        yield
    except ApiError:
        raise
    except FerError as e:
        if e.status != 503:
            raise
        raise ApiError("feedback_unavailable", str(e), 503) from None


def _form_bool(value, field: str) -> bool:
    if value is None:
        return True
    try:
        return parse_flag(value)
    except ValueError:
        raise ApiError("invalid_request", f"{field}: expected true or false, got {value!r}",
                       422) from None


@router.post("/feedback", response_model=FeedbackResponse, status_code=201,
             openapi_extra=FEEDBACK_BODY,
             responses=errors.responses(400, 401, 404, 413, 415, 422, 503),
             summary="Send the true label of a predicted face (by prediction id) or of an image")
async def feedback(request: Request, service: ServiceDep, store: StoreDep, budget: BudgetDep):
    kind = media_type(request)
    data = None
    if kind == "application/json":
        body = await read_json(request, FeedbackJSON)
        label, pid, note, detect = body.label, body.prediction_id, body.note, body.detect
        if body.image_base64 is not None:
            data = b64decode(body.image_base64)
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with read_form(request, max_files=1) as form:
            label = form.get("label")
            if not isinstance(label, str) or not label.strip():
                raise ApiError("invalid_request", "label: field required", 422)
            pid = form.get("prediction_id") or None
            note = form.get("note") or None
            detect = _form_bool(form.get("detect"), "detect")
            if form.get("file") is not None:
                data = await upload_bytes(form.get("file"), "file")
        for name, v, n in (("label", label, 32), ("prediction_id", pid, 64), ("note", note, 2000)):
            if v is not None and (not isinstance(v, str) or len(v) > n):
                raise ApiError("invalid_request", f"{name}: expected text of at most {n} "
                               "characters", 422)
    else:
        raise unsupported_body(kind, "application/json, multipart/form-data or "
                                     "application/x-www-form-urlencoded")

    label = service.check_label(label)
    if (pid is None) == (data is None):
        raise ApiError("invalid_request", "send exactly one of prediction_id or an image", 422)
    predicted = model_id = None
    if pid is not None:
        hit = service.crops.get(pid)
        if hit is None:
            raise ApiError("unknown_prediction_id",
                           f"prediction_id: {pid!r} is unknown or too old (only the "
                           f"{service.crops.capacity} most recent predictions are kept); "
                           "send the image instead", 404)
        crop, predicted, model_id = hit
    else:
        async with budget.hold(declared_pixels(data)) if budget else contextlib.nullcontext():
            faces, boxes = await service.prepare_in_thread(data, detect)
        if len(faces) == 0:
            raise ApiError("no_face", "image: no face found; send a face crop with "
                           "detect=false", 422)
        areas = [b[2] * b[3] for b in boxes]
        crop = faces[max(range(len(areas)), key=areas.__getitem__)]
    with _unavailable_as_503():
        fid, stored = await run_in_threadpool(store.add_and_count, crop, label, prediction_id=pid,
                                              predicted=predicted, model_id=model_id, note=note)
    return {"id": fid, "label": label, "prediction_id": pid, "predicted": predicted,
            "stored": stored}


@router.get("/feedback/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}},
                             "description": "FER2013-format CSV: emotion,pixels,Usage"},
                       **errors.responses(401, 503)},
            summary="All feedback as a FER2013-format CSV (loadable as a dataset)")
async def export(store: StoreDep):
    with _unavailable_as_503():
        lines = await run_in_threadpool(store.iter_csv)  # query runs now: 503 before any byte
    return StreamingResponse(iterate_in_threadpool(lines), media_type="text/csv",
                             headers={"Content-Disposition":
                                      'attachment; filename="feedback.csv"'})
