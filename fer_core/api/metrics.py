"""Prometheus metrics of one API process: ``GET /metrics`` (text exposition format).

``prometheus-client`` with one pure-ASGI middleware (:class:`RequestMetrics`) that reads the
matched route template after the router ran, so paths with ids (``/v1/videos/{vid}``) stay one
series. Measured against ``prometheus-fastapi-instrumentator`` (which matches the route again
per request) by ``python -m fer_core bench finetune``'s sibling ``bench metrics``: see README,
"Observability". Each app has its own registry (tests start several apps in one process).

Series (all prefixed ``fer_``):

* ``http_requests_total{route,method,status}`` and ``http_request_duration_seconds{route,
  method,status}`` (histogram);
* ``faces_per_request{route}`` (histogram; predict routes, faces summed over a batch request);
* ``batch_size`` (histogram): faces per model call of the micro-batcher;
* ``feedback_writes_total{result}`` (``ok`` / ``error``) and ``store_errors_total{operation}``
  (a request answered 503 because the store is down, or a failed read of the model pointer);
* ``video_jobs{state}`` (gauge, read at scrape time from the video job folders);
* ``active_model_info{model_id,sha256,source}`` (gauge, 1 for the model now served),
  ``model_swaps_total`` and ``model_pointer_version``.

With ``serve --workers N`` the workers keep their counters and histograms in one folder
(prometheus-client's multi-process mode, set up by ``serve``), so whichever worker answers
``/metrics`` reports the server's totals; the scrape-time gauges (model served, pointer version)
are those of the worker that answered, and ``fer_video_jobs`` counts the shared job folders.
"""

from __future__ import annotations

import contextvars
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FACE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STORE_ROUTES = {"/v1/feedback", "/v1/feedback/export", "/v1/models/promote",
                "/v1/models/rollback", "/v1/models/history"}
FACE_ROUTES = {"/v1/predict", "/v1/predict/batch"}

_faces: contextvars.ContextVar[list | None] = contextvars.ContextVar("fer_faces", default=None)


def count_faces(n: int) -> None:
    """Add ``n`` faces to the current request's count (called where faces are described)."""
    box = _faces.get()
    if box is not None:
        box[0] += n


class _AppCollector:
    """Gauges read at scrape time: the model served, video jobs by state."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        service = getattr(self.app.state, "service", None)
        info = GaugeMetricFamily("fer_active_model_info", "the model this instance serves (1)",
                                 labels=["model_id", "sha256", "source"])
        version = GaugeMetricFamily("fer_model_pointer_version",
                                    "version of the store's active-model pointer last applied")
        if service is not None and service.loaded:
            info.add_metric([service.model_id or "", service.model_sha256 or "",
                             service.source or ""], 1)
            version.add_metric([], service.pointer_version)
        yield info
        yield version
        jobs = GaugeMetricFamily("fer_video_jobs", "video analysis jobs by state",
                                 labels=["state"])
        states = getattr(self.app.state, "video_job_states", None)
        for state, n in sorted((states() if states else {}).items()):
            jobs.add_metric([state], n)
        yield jobs


class Metrics:
    """The series of one app (its own registry)."""

    def __init__(self, app):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("fer_http_requests_total", "HTTP requests",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("fer_http_request_duration_seconds", "HTTP request latency",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.faces = Histogram("fer_faces_per_request", "faces found per predict request",
                               ["route"], buckets=FACE_BUCKETS, registry=r)
        self.batch = Histogram("fer_batch_size", "faces per model call (micro-batches)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.feedback = Counter("fer_feedback_writes_total", "feedback writes", ["result"],
                                registry=r)
        self.store_errors = Counter("fer_store_errors_total",
                                    "feedback store unreachable (503 answers, pointer reads)",
                                    ["operation"], registry=r)
        self.swaps = Counter("fer_model_swaps_total", "model swaps (promotions, rollbacks)",
                             registry=r)
        scraped = _AppCollector(app)
        r.register(scraped)
        self._exposed = r
        if values.ValueClass is not values.MutexValue:  # multi-process mode (serve --workers)
            self._exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self._exposed)  # every worker's counters and histograms
            self._exposed.register(scraped)

    def observe(self, route: str, method: str, status: int, seconds: float, faces) -> None:
        code = str(status)
        self.requests.labels(route, method, code).inc()
        self.latency.labels(route, method, code).observe(seconds)
        if faces is not None and route in FACE_ROUTES and status == 200:
            self.faces.labels(route).observe(faces)
        if route == "/v1/feedback" and method == "POST":
            if status == 201:
                self.feedback.labels("ok").inc()
            elif status >= 500:
                self.feedback.labels("error").inc()
        if status == 503 and route in STORE_ROUTES:
            self.store_errors.labels(route).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST


def route_template(scope) -> str:
    """The matched route's template with its router prefix ("/v1/videos/{vid}"), or
    "unmatched". The route records its own path without the prefix it was included under, so
    the prefix is the part of the request path before what the route's pattern matches."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return "unmatched"
    path = scope.get("path", "")
    regex = getattr(route, "path_regex", None)
    if regex is None or regex.match(path):
        return template
    i = path.find("/", 1)
    while i > 0:
        if regex.match(path[i:]):
            return path[:i] + template
        i = path.find("/", i + 1)
    return template


class RequestMetrics:
    """Pure ASGI middleware: count and time every HTTP request by route template."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]
        box = [0]
        token = _faces.set(box)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            _faces.reset(token)
            path = route_template(scope)
            if path != "/metrics":
                self.metrics.observe(path, scope.get("method", ""), status[0],
                                     time.perf_counter() - t0, box[0])
