"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from fer_core.api import errors
from fer_core.api.deps import (get_model, media_type, read_form, read_json, unsupported_body,
                               upload_bytes)
from fer_core.api.imaging import b64decode
from fer_core.api.schemas import BatchJSON, BatchResponse, PredictJSON, PredictResponse
from fer_core.api.service import ModelService
from fer_core.errors import FerError

router = APIRouter(tags=["predict"])

_FILE = {"type": "string", "format": "binary"}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": _FILE}}},
    "application/json": {"schema": PredictJSON.model_json_schema()},
}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"],
                                       "properties": {"files": {"type": "array", "items": _FILE,
                                                                "minItems": 1,
                                                                "maxItems": 64}}}},
    "application/json": {"schema": BatchJSON.model_json_schema()},
}}}
DETECT = Query(True, description="find faces; false = the image already is a face crop")
INLINE_BYTES = 32 * 1024
TOP_K = Query(3, ge=1, le=10, description="how many best labels to list per face")


async def faces_of(service: ModelService, data: bytes, detect: bool, top_k: int,
                   where: str = "image") -> list[dict]:
    """Bytes -> described faces: decoding/detection in a worker thread, model via the batcher."""
    if not detect and len(data) <= INLINE_BYTES:  # a small crop decodes faster than a thread hop
        faces, boxes = service.prepare(data, detect, where)
    else:
        faces, boxes = await run_in_threadpool(service.prepare, data, detect, where)
    if len(faces) == 0:
        return []
    probs = await service.batcher.predict(faces)
    return service.describe(faces, boxes, probs, top_k)


@router.post("/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY,
             responses=errors.responses(400, 413, 415, 422, 503),
             summary="Emotions of the faces in one image")
async def predict(request: Request, detect: bool = DETECT, top_k: int = TOP_K,
                  service: ModelService = Depends(get_model)):
    t0 = time.perf_counter()
    kind = media_type(request)
    if kind == "multipart/form-data":
        async with read_form(request, max_files=1) as form:
            data = await upload_bytes(form.get("file"), "file")
    elif kind == "application/json":
        body = await read_json(request, PredictJSON)
        data = b64decode(body.image_base64)
    else:
        raise unsupported_body(kind, "multipart/form-data (field 'file') or application/json "
                                     "({'image_base64': ...})")
    faces = await faces_of(service, data, detect, top_k)
    return {"faces": faces, "model_id": service.model_id,
            "timing_ms": round((time.perf_counter() - t0) * 1000, 3)}


@router.post("/predict/batch", response_model=BatchResponse, openapi_extra=BATCH_BODY,
             responses=errors.responses(400, 413, 415, 422, 503),
             summary="Emotions of the faces in several images (errors reported per image)")
async def predict_batch(request: Request, detect: bool = DETECT, top_k: int = TOP_K,
                        service: ModelService = Depends(get_model)):
    import asyncio

    t0 = time.perf_counter()
    kind = media_type(request)
    items: list = []  # bytes or an ApiError per image
    if kind == "multipart/form-data":
        async with read_form(request, max_files=64) as form:
            values = form.getlist("files")
            if not values:
                raise errors.ApiError("missing_file", "multipart field 'files' is required", 422)
            for v in values:
                items.append(await upload_bytes(v, "files"))
    elif kind == "application/json":
        body = await read_json(request, BatchJSON)
        for i, text in enumerate(body.images_base64):
            try:
                items.append(b64decode(text, where=f"images_base64[{i}]"))
            except FerError as e:
                items.append(e)
    else:
        raise unsupported_body(kind, "multipart/form-data (fields 'files') or application/json "
                                     "({'images_base64': [...]})")

    async def one(i, item):
        if isinstance(item, Exception):
            return _failed(i, item)
        try:
            faces = await faces_of(service, item, detect, top_k, where=f"image {i}")
        except FerError as e:
            return _failed(i, e)
        return {"index": i, "ok": True, "faces": faces}

    results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    return {"results": results, "model_id": service.model_id,
            "timing_ms": round((time.perf_counter() - t0) * 1000, 3)}


def _failed(i: int, e: FerError) -> dict:
    body = errors.error_response(e).body
    import json
    payload = json.loads(body)
    return {"index": i, "ok": False, "faces": [], **payload}
