"""Dependencies shared by the routers: service, store, API key, request-body reading."""

from __future__ import annotations

import json
import secrets

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from fer_core.api.errors import ApiError
from fer_core.api.feedback_store import FeedbackStore
from fer_core.api.service import ModelService
from fer_core.settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required for feedback and export when the server "
                                          "sets FER_API_KEY")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_service(request: Request) -> ModelService:
    return request.app.state.service


async def get_model(service: ModelService = Depends(get_service)):
    """The service pinned to the model active now (the request finishes on it even if a
    promotion swaps models meanwhile), or 503 JSON when no model is loaded."""
    view = service.pin()
    try:
        view.require_model()
        yield view
    finally:
        await view.release()


async def get_store(request: Request) -> FeedbackStore:
    store = request.app.state.store
    if store is None:
        raise ApiError("feedback_unavailable",
                       f"feedback store unavailable: {request.app.state.store_error}", 503)
    return store


async def require_api_key(key: str | None = Depends(api_key_header),
                    settings: Settings = Depends(get_settings)) -> None:
    if settings.api_key is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError("unauthorized", "missing or wrong API key (header X-API-Key)", 401)


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
    settings = request.app.state.settings
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
