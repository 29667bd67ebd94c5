"""Errors as JSON ``{"error": short_code, "detail": message}``, mapped in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fer_core.errors import FerError

log = logging.getLogger("fer_core.api")
server_log = logging.getLogger("uvicorn.error")  # uvicorn's format and --log-level


class ApiError(FerError):
    """A user-caused API error with a short machine-readable ``code``."""

    def __init__(self, code: str, detail: str, status: int = 400, *, where: str | None = None):
        self.code = code
        super().__init__(detail, where=where, status=status)


class ErrorBody(BaseModel):
    error: str
    detail: str


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "too_large",
               415: "unsupported_media_type", 422: "invalid_request", 503: "unavailable"}


def _short_validation(errors) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def error_response(exc: Exception) -> JSONResponse:
    """The JSON response for any exception (the single mapping used by every handler)."""
    headers = None
    if isinstance(exc, ApiError):
        status, code, detail = exc.status, exc.code, str(exc)
    elif isinstance(exc, FerError):
        status, code, detail = exc.status, _HTTP_CODES.get(exc.status, "bad_input"), str(exc)
    elif isinstance(exc, RequestValidationError):
        status, code, detail = 422, "invalid_request", _short_validation(exc.errors())
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
    else:
        log.exception("unhandled error", exc_info=exc)
        status, code, detail = 500, "internal", "internal server error"
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "ApiKey"}
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """The client hung up before sending its whole body: one line in the server log.

    Handled here (not by the catch-all ``Exception`` handler, which Starlette re-raises to the
    server), so no traceback is logged; the empty response is never sent.
    """
    client = f"{request.client.host}:{request.client.port}" if request.client else "client"
    server_log.info('%s - "%s %s" disconnected before sending the whole request body', client,
                    request.method, request.url.path)
    return Response(status_code=400)


class CatchAll:
    """Pure ASGI middleware: an unexpected error becomes its 500 JSON answer here (logged once),
    so it never reaches the server, which would close the keep-alive connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - answered as 500 JSON, traceback logged
            if started:
                raise
            await error_response(exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(CatchAll)
    app.add_exception_handler(ClientDisconnect, client_gone)
    for kind in (FerError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)


def responses(*statuses: int) -> dict:
    """OpenAPI ``responses=`` entries documenting the error body for ``statuses``."""
    return {s: {"model": ErrorBody, "description": _HTTP_CODES.get(s, "error")}
            for s in statuses}
