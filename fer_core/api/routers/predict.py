"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Query, Request

from fer_core.api import errors
from fer_core.api.deps import (BudgetDep, ModelDep, SettingsDep, media_type, read_form,
                               read_json, unsupported_body, upload_bytes)
from fer_core.api.errors import ApiError
from fer_core.api.imaging import PixelBudget, b64decode, declared_pixels
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
INLINE_PIXELS = 256 * 256
TOP_K = Query(3, ge=1, le=10, description="how many best labels to list per face")


async def faces_of(service: ModelService, data: bytes, detect: bool, top_k: int,
                   where: str = "image", budget: PixelBudget | None = None) -> list[dict]:
    """Bytes -> described faces: decoding/detection in a worker thread (holding the image's
    pixels in the server's decode ``budget``; a bounded number at once:
    :meth:`ModelService.prepare_in_thread`), model via the batcher."""
    pixels = declared_pixels(data)
    if not detect and len(data) <= INLINE_BYTES and pixels is not None \
            and pixels <= INLINE_PIXELS:  # a small crop decodes faster than a thread hop
        faces, boxes = service.prepare(data, detect, where)
    elif budget is None:
        faces, boxes = await service.prepare_in_thread(data, detect, where)
    else:
        async with budget.hold(pixels):
            faces, boxes = await service.prepare_in_thread(data, detect, where)
    if len(faces) == 0:
        return []
    probs = await service.batcher.predict(faces)
    return service.describe(faces, boxes, probs, top_k)


async def read_images(request: Request, batch: bool) -> list:
    """The request body's images as bytes, in order, for both endpoints.

    Multipart field ``file`` (single) or ``files`` (batch, up to 64), or JSON ``image_base64`` /
    ``images_base64``. In a batch an undecodable base64 item becomes its :class:`FerError` in
    place, so the other images are still answered; anything wrong with the body itself raises.
    """
    field, schema, max_files = ("files", BatchJSON, 64) if batch else ("file", PredictJSON, 1)
    kind = media_type(request)
    if kind == "multipart/form-data":
        async with read_form(request, max_files=max_files) as form:
            values = form.getlist(field) or [None]  # None -> "field is required"
            return [await upload_bytes(v, field) for v in values]
    if kind == "application/json":
        body = await read_json(request, schema)
        if not batch:
            return [b64decode(body.image_base64)]
        items: list = []
        for i, text in enumerate(body.images_base64):
            try:
                items.append(b64decode(text, where=f"images_base64[{i}]"))
            except FerError as e:
                items.append(e)
        return items
    json_field = "'images_base64': [...]" if batch else "'image_base64': ..."
    raise unsupported_body(kind, f"multipart/form-data (field{'s' if batch else ''} '{field}') "
                                 f"or application/json ({{{json_field}}})")


@router.post("/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY,
             responses=errors.responses(400, 413, 415, 422, 503),
             summary="Emotions of the faces in one image")
async def predict(request: Request, service: ModelDep, budget: BudgetDep,
                  detect: bool = DETECT, top_k: int = TOP_K):
    t0 = time.perf_counter()
    (data,) = await read_images(request, batch=False)
    faces = await faces_of(service, data, detect, top_k, budget=budget)
    return {"faces": faces, "model_id": service.model_id, "model_sha256": service.model_sha256,
            "timing_ms": round((time.perf_counter() - t0) * 1000, 3)}


@router.post("/predict/batch", response_model=BatchResponse, openapi_extra=BATCH_BODY,
             responses=errors.responses(400, 413, 415, 422, 503),
             summary="Emotions of the faces in several images (errors reported per image)")
async def predict_batch(request: Request, service: ModelDep, budget: BudgetDep,
                        settings: SettingsDep, detect: bool = DETECT, top_k: int = TOP_K):
    t0 = time.perf_counter()
    items = await read_images(request, batch=True)  # bytes or a FerError per image
    items = over_request_budget(items, settings.max_request_pixels)

    async def one(i, item):
        if isinstance(item, Exception):
            return _failed(i, item)
        try:
            faces = await faces_of(service, item, detect, top_k, where=f"image {i}",
                                   budget=budget)
        except FerError as e:
            return _failed(i, e)
        except Exception as e:  # noqa: BLE001 - one item's failure is that item's answer
            return _failed(i, e)  # 500 "internal", logged by error_response
        return {"index": i, "ok": True, "faces": faces}

    results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    return {"results": results, "model_id": service.model_id,
            "model_sha256": service.model_sha256, "timing_ms": round((time.perf_counter() - t0) * 1000, 3)}


def over_request_budget(items: list, max_pixels: int) -> list:
    """``items`` with each image past the request's pixel budget (declared pixels summed in
    order) replaced by its 413 ``too_many_pixels`` error."""
    total, out = 0, []
    for i, item in enumerate(items):
        if not isinstance(item, Exception):
            n = declared_pixels(item) or 0
            if total + n <= max_pixels:
                total += n
            else:
                item = ApiError("too_many_pixels",
                                f"image {i}: the images of this request declare more than "
                                f"{max_pixels} pixels in total (the per-request limit); send "
                                "the rest in another request", 413)
        out.append(item)
    return out


def _failed(i: int, e: Exception) -> dict:
    payload = json.loads(errors.error_response(e).body)
    return {"index": i, "ok": False, "faces": [], **payload}
