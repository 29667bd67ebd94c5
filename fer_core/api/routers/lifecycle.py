"""Liveness, readiness and the model lifecycle: ``GET /v1/health/live``, ``/v1/health/ready``,
``POST /v1/models/promote``, ``POST /v1/models/rollback``, ``GET /v1/models/history``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from fer_core.api import errors
from fer_core.api.deps import (ApiKeyDep, ServiceDep, SettingsDep, StoreDep, StoreStateDep,
                               read_json)
from fer_core.api.errors import ApiError
from fer_core.api.routers.meta import feedback_store_health
from fer_core.api.service import ModelService
from fer_core.errors import FerError
from fer_core.resolve import configured_model

router = APIRouter(tags=["lifecycle"])


class PromoteJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(..., min_length=1, max_length=120,
                     description="a run id in the server's runs folder")


@router.get("/health/live", summary="The process answers (liveness)")
async def live():
    return {"status": "alive"}


@router.get("/health/ready", summary="A model is loaded (readiness); store state",
            responses=errors.responses(503))
async def ready(service: ServiceDep, settings: SettingsDep, store_state: StoreStateDep):
    """200 when a model is loaded. The feedback store is reported: when it is unreachable the
    instance still predicts (feedback answers 503 until it is back: the documented degraded
    mode), so it stays ready with ``"status": "degraded"``."""
    store = await feedback_store_health(store_state, settings)
    body = {"ready": service.loaded, "model_id": service.model_id,
            "model_sha256": service.model_sha256, "feedback_store": store,
            "status": "ready" if store["reachable"] else "degraded"}
    if not service.loaded:
        body["status"] = "not_ready"
        body["model_error"] = service.public_error
        return JSONResponse(body, status_code=503)
    return body


def _store_errors(fn):
    try:
        return fn()
    except FerError as e:
        if e.status == 503:
            raise ApiError("feedback_unavailable", str(e), 503) from None
        raise


async def _act(store, service: ModelService, fn):
    out = await run_in_threadpool(_store_errors, fn)
    await _follow_now(store, service)
    return out


async def _follow_now(store, service: ModelService) -> None:
    """This instance applies the new pointer at once (the others within their poll)."""
    try:
        pointer = await run_in_threadpool(store.active)
    except FerError:
        return
    await service.follow(store, pointer)


def _who(request: Request) -> str:
    host = request.client.host if request.client else "?"
    return f"api {host}"


PROMOTE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": PromoteJSON.model_json_schema()}}}}


@router.post("/models/promote", dependencies=[ApiKeyDep],
             openapi_extra=PROMOTE_BODY, responses=errors.responses(400, 401, 404, 409, 422, 503),
             summary="Make a run the active model of every instance on this store")
async def promote(request: Request, store: StoreDep, service: ServiceDep,
                  settings: SettingsDep):
    from fer_core import promotion, runs
    body = await read_json(request, PromoteJSON)
    run_id = runs.validate_run_id(body.run)   # ids only: never a path on the server
    return await _act(store, service, lambda: promotion.promote(
        store, runs.run_path(run_id), who=_who(request),
        configured_model=configured_model(settings)))


@router.post("/models/rollback", dependencies=[ApiKeyDep],
             responses=errors.responses(401, 409, 503),
             summary="Return to the model active before the last promotion")
async def rollback(request: Request, store: StoreDep, service: ServiceDep):
    from fer_core import promotion
    return await _act(store, service, lambda: promotion.rollback(store, who=_who(request)))


@router.get("/models/history", responses=errors.responses(503),
            summary="The active-model pointer and the history of promotions and rollbacks")
async def history(store: StoreDep):
    from fer_core import promotion
    out = await run_in_threadpool(_store_errors, lambda: promotion.status(store))
    for item in (*out["history"], out["active"]):   # run names, never server paths
        item["run"] = Path(item["run"]).name if item.get("run") else None
    return out
