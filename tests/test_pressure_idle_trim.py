"""Freed memory goes back to the OS when the API goes idle: the app counts requests in flight
and calls glibc ``malloc_trim(0)`` once after some traffic and ``idle_s`` seconds of quiet; not
while a request runs, and not again without new traffic. (The RSS it gives back is measured by
``python -m fer_core bench soak``, see README.)"""

from __future__ import annotations

import time

import pytest

from fer_core.api.memory import _libc_trim
from tests.factories import make_client

pytestmark = pytest.mark.skipif(_libc_trim() is None, reason="not glibc")


def _await(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_one_trim_after_traffic_and_quiet_none_without_traffic(tmp_path):
    with make_client(tmp_path) as client:
        trim = client.app.state.idle_trim
        trim.idle_s = 0.2
        assert client.get("/v1/health").status_code == 200
        _await(lambda: trim.trims == 1)
        assert trim.in_flight == 0 and not trim.dirty
        time.sleep(1.0)  # quiet: no new traffic, so no second trim
        assert trim.trims == 1
        assert client.get("/v1/health").status_code == 200
        _await(lambda: trim.trims == 2)


def test_no_trim_while_a_request_is_in_flight(tmp_path):
    with make_client(tmp_path) as client:
        trim = client.app.state.idle_trim
        trim.idle_s = 0.2
        assert client.get("/v1/health").status_code == 200
        trim.in_flight += 1  # as a long request would
        time.sleep(1.0)
        assert trim.trims == 0
        trim.in_flight -= 1
        trim.last_end = time.monotonic()
        _await(lambda: trim.trims == 1)
