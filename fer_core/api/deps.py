"""Typed dependencies of the routes (as in FastAPI's full-stack template): a route declares
what it needs as a parameter, ``settings: SettingsDep``, ``service: ModelDep``,
``store: StoreDep`` ..., and never reads ``app.state`` itself (tests/test_api_deps.py checks the
routers). This module is the one place that knows where the app keeps them (:func:`_state`; set
up by :func:`fer_core.api.app.create_app` and its lifespan).

- :data:`SettingsDep`: the app's :class:`~fer_core.settings.Settings`;
- :data:`ServiceDep`: the :class:`~fer_core.api.service.ModelService` (lifecycle, health);
- :data:`ModelDep`: the service pinned to the model active now, 503 JSON without one;
- :data:`StoreDep`: the feedback store, 503 JSON when it is unavailable;
  :data:`StoreStateDep`: the store or None, with why (health);
- :data:`BudgetDep`: the server's decoded-pixel budget; :data:`MetricsDep`: the metrics;
- :data:`ApiKeyDep` (used as ``dependencies=[Depends(require_api_key)]``).

Also here: request-body reading shared by the routers (:func:`read_json`, :func:`read_form`,
:func:`upload_bytes`)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from fer_core.api.errors import ApiError
from fer_core.api.feedback_store import FeedbackStore
from fer_core.api.imaging import PixelBudget
from fer_core.api.metrics import Metrics
from fer_core.api.service import ModelService
from fer_core.settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required for feedback and export when the server "
                                          "sets FER_API_KEY")


def _state(request: Request):
    """Where the app keeps its services (the one reader of ``app.state``)."""
    return request.app.state


async def get_settings(request: Request) -> Settings:
    return _state(request).settings


async def get_service(request: Request) -> ModelService:
    return _state(request).service


ServiceDep = Annotated[ModelService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_model(service: ServiceDep):
    """The service pinned to the model active now (the request finishes on it even if a
    promotion swaps models meanwhile), or 503 JSON when no model is loaded."""
    view = service.pin()
    try:
        view.require_model()
        yield view
    finally:
        await view.release()


@dataclass(frozen=True)
class StoreState:
    """The feedback store (None when it could not be opened) and why not."""

    store: FeedbackStore | None
    error: str | None


async def get_store_state(request: Request) -> StoreState:
    state = _state(request)
    return StoreState(state.store, state.store_error)


StoreStateDep = Annotated[StoreState, Depends(get_store_state)]


async def get_store(state: StoreStateDep) -> FeedbackStore:
    if state.store is None:
        raise ApiError("feedback_unavailable", f"feedback store unavailable: {state.error}", 503)
    return state.store


async def get_budget(request: Request) -> PixelBudget | None:
    """The decoded-pixel budget shared by the server's requests (None before start-up)."""
    return getattr(_state(request), "decode_budget", None)


async def get_metrics(request: Request) -> Metrics:
    return _state(request).metrics


async def require_api_key(key: Annotated[str | None, Depends(api_key_header)],
                          settings: SettingsDep) -> None:
    if settings.api_key is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError("unauthorized", "missing or wrong API key (header X-API-Key)", 401)


ModelDep = Annotated[ModelService, Depends(get_model)]
StoreDep = Annotated[FeedbackStore, Depends(get_store)]
BudgetDep = Annotated[PixelBudget | None, Depends(get_budget)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ApiKeyDep = Depends(require_api_key)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    body = await request.body()
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError("invalid_json", f"request body is not valid JSON ({e})", 400) from None
    except RecursionError:
        raise ApiError("invalid_json", "request body is JSON nested too deeply", 400) from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from None


def read_form(request: Request, max_files: int = 64):
    """``async with read_form(request) as form:`` (uploaded files are closed afterwards)."""
    settings = _state(request).settings
    return request.form(max_files=max_files, max_fields=32,
                        max_part_size=min(settings.max_upload_bytes, 1024 * 1024))


async def upload_bytes(value, field: str) -> bytes:
    """Bytes of a multipart file field; a plain text field is not a file (422)."""
    if value is None:
        raise ApiError("missing_file", f"multipart field {field!r} is required", 422)
    if isinstance(value, str):
        raise ApiError("missing_file", f"multipart field {field!r} must be a file upload "
                       "(with a filename), not a text value", 422)
    return await value.read()


def unsupported_body(kind: str, expected: str) -> ApiError:
    return ApiError("unsupported_media_type",
                    f"request content type {kind or 'missing'!r}; expected {expected}", 415)
