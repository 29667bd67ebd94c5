"""The FastAPI application: ``create_app(settings)``.

Routers per resource under ``/v1``; the model is loaded in the lifespan; every error is JSON
``{"error", "detail"}`` from one mapping (:mod:`fer_core.api.errors`). Run it with
``python -m fer_core serve`` or ``uvicorn --factory fer_core.api.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Response  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from fer_core import __version__  # noqa: E402
from fer_core.api import errors  # noqa: E402
from fer_core.api.deps import MetricsDep  # noqa: E402
from fer_core.api.errors import ApiError  # noqa: E402
from fer_core.api.imaging import decode_budget  # noqa: E402
from fer_core.api.memory import IdleTrim  # noqa: E402
from fer_core.api.metrics import Metrics, RequestMetrics  # noqa: E402
from fer_core.api.routers import feedback, lifecycle, meta, predict, videos  # noqa: E402
from fer_core.api.service import ModelService  # noqa: E402
from fer_core.errors import FerError  # noqa: E402
from fer_core.settings import Settings, get_settings  # noqa: E402

# uvicorn's own logger: its start-up lines go there, formatted and shown at the --log-level
log = logging.getLogger("uvicorn.error")


class BodyLimit:
    """Pure ASGI middleware: 413 JSON for bodies over ``max_bytes``, by Content-Length up front
    and by counting while the body is read (chunked uploads). ``path_limits`` maps a path to a
    function giving that route's own limit (video uploads)."""

    def __init__(self, app, max_bytes: int, path_limits: dict | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route_limit = self.path_limits.get(scope.get("path", "").rstrip("/"))
        limit = route_limit() if route_limit else self.max_bytes
        mb = f"{limit / 1024 / 1024:.3g} MB"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    resp = errors.error_response(ApiError(
                        "too_large", f"request body of {declared} bytes exceeds the {mb} limit",
                        413))
                    resp.headers["Connection"] = "close"
                    return await resp(scope, receive, send)
                break
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError("too_large", f"request body exceeds the {mb} limit", 413)
            return message

        return await self.app(scope, limited_receive, send)


async def follow_pointer(settings: Settings, service: ModelService, store,
                         metrics: Metrics) -> None:
    """Every ``model_poll_s`` seconds: read the store's active-model pointer and swap to the
    model it names (a store that is down leaves the current model serving). Nothing but
    cancellation ends the loop: an unexpected error is logged, counted as a store error and
    the next poll tries again."""
    while True:
        await asyncio.sleep(settings.model_poll_s)
        try:
            pointer = await run_in_threadpool(store.active)
            changed = await service.follow(store, pointer)
        except FerError:
            metrics.store_errors.labels("poll").inc()
            continue
        except Exception:  # noqa: BLE001 - one failed poll must not stop following the store
            metrics.store_errors.labels("poll").inc()
            log.exception("following the active-model pointer failed; next try in %s s",
                          settings.model_poll_s)
            continue
        if changed:
            metrics.swaps.inc()
            log.info("now serving model %s (pointer version %s)", service.model_id,
                     service.pointer_version)
        elif service.swap_error:
            log.warning("%s", service.swap_error)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to the process's (:func:`fer_core.settings.get_settings`,
    validated: a bad FER_* value raises FerError here, before the app exists)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = ModelService(settings)
        service.on_batch = app.state.metrics.batch.observe
        app.state.decode_budget = decode_budget(settings.max_pixels, settings.decode_budget_dir)
        await run_in_threadpool(service.load)
        if settings.load_model and service.error:
            log.warning("no model loaded, predictions answer 503 until it is fixed: %s",
                        service.error)
        app.state.service = service
        await service.start()
        app.state.idle_trim.start()
        from fer_core.api.feedback_store import FeedbackStore
        try:
            app.state.store = await run_in_threadpool(FeedbackStore, settings.feedback_db)
            app.state.store_error = None
        except FerError as e:
            app.state.store, app.state.store_error = None, str(e)
        poller = None
        if app.state.store is not None and settings.load_model:
            try:  # start on the promoted model, if there is one
                await service.follow(app.state.store,
                                     await run_in_threadpool(app.state.store.active))
            except FerError:
                pass  # store down: the configured model serves until the poller reaches it
            if service.swap_error:
                log.warning("%s", service.swap_error)
            if settings.model_poll_s > 0:
                poller = asyncio.create_task(
                    follow_pointer(settings, service, app.state.store, app.state.metrics),
                    name="fer-model-pointer")
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with suppress(asyncio.CancelledError):
                    await poller
            await service.stop()
            await app.state.idle_trim.stop()
            if app.state.store is not None:
                app.state.store.close()

    app = FastAPI(title="FER Studio API", version=__version__, lifespan=lifespan,
                  description="Facial emotion recognition: predict emotions of faces in images, "
                              "send corrections back as feedback, export them as a dataset.")
    # what the typed dependencies give the routes (fer_core.api.deps; routes never read it)
    app.state.settings = settings
    app.state.service = None
    app.state.store = None
    app.state.store_error = "not started"
    app.state.metrics = Metrics(app)
    app.state.video_job_states = lambda: videos.job_states(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes,
                       path_limits={"/v1/videos": lambda: app.state.settings.video_max_bytes})
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.state.idle_trim = IdleTrim()
    app.add_middleware(app.state.idle_trim.middleware)  # outermost: sees every request
    for r in (predict.router, feedback.router, lifecycle.router, meta.router, videos.router):
        app.include_router(r, prefix="/v1")

    @app.get("/metrics", include_in_schema=False)
    def metrics(registry: MetricsDep) -> Response:  # a thread: it counts video job files
        body, kind = registry.exposition()
        return Response(body, media_type=kind)
    return app
