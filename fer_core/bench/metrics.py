"""Cost of the /metrics request instrumentation: prometheus-client + our ASGI middleware vs
prometheus-fastapi-instrumentator, per request, on the same tiny FastAPI app.

Calls the ASGI app directly (no sockets, no HTTP client), ``--requests`` requests per round,
rounds alternating between the variants so a busy machine slows them alike; prints the median
microseconds per request and the overhead over the bare app. Needs
``prometheus-fastapi-instrumentator`` (requirements-dev.txt) for the comparison.
"""

from __future__ import annotations

import asyncio
import statistics
import time


def add_arguments(p) -> None:
    p.add_argument("--requests", type=int, default=2000, help="requests per round")
    p.add_argument("--rounds", type=int, default=7)


def _app(variant: str):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/items/{item}")
    async def item(item: str):
        return {"item": item}

    if variant == "prometheus-client":
        from fer_core.api.metrics import Metrics, RequestMetrics
        app.add_middleware(RequestMetrics, metrics=Metrics(app))
    elif variant == "instrumentator":
        from prometheus_client import CollectorRegistry
        from prometheus_fastapi_instrumentator import Instrumentator
        Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


async def _round(app, n: int) -> float:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    t0 = time.perf_counter()
    for i in range(n):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": f"/v1/items/{i % 50}",
                 "raw_path": b"", "root_path": "", "query_string": b"", "headers": [],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
    return (time.perf_counter() - t0) / n * 1e6


def run(args) -> dict:
    variants = ["bare", "prometheus-client"]
    try:
        import prometheus_fastapi_instrumentator  # noqa: F401
        variants.append("instrumentator")
    except ImportError:
        pass
    apps = {v: _app(v) for v in variants}

    async def main():
        for app in apps.values():   # start-up (middleware stack built on first call)
            await _round(app, 50)
        times = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, app in apps.items():
                times[v].append(await _round(app, args.requests))
        return times

    times = asyncio.run(main())
    med = {v: statistics.median(t) for v, t in times.items()}
    out = {"requests_per_round": args.requests, "rounds": args.rounds,
           "us_per_request_median": {v: round(m, 1) for v, m in med.items()}}
    out["overhead_us"] = {v: round(med[v] - med["bare"], 1) for v in variants if v != "bare"}
    return out
