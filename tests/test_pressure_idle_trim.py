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


# ----------------------------------------------------------------------------- tune_malloc
# ``serve`` tunes glibc before it loads anything (fer_core.commands.serve.tune_malloc). Checked in
# a fresh interpreter each, by what glibc does: a block is mapped on its own (mallinfo2's hblks
# rises by one) from the threshold up, and taken from the heap just below it.

_PROBE = r"""
import ctypes, json, os, sys
from fer_core.commands.serve import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
tune_malloc()

def mapped(size):
    before = libc.mallinfo2().hblks
    p = libc.malloc(size)
    now = libc.mallinfo2().hblks
    libc.free(p)
    return now - before == 1

sizes = json.loads(sys.argv[1])
print(json.dumps({"env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_",
                                                          "MALLOC_ARENA_MAX")},
                  "mapped": {str(s): mapped(s) for s in sizes}}))
"""


def _probe_malloc(sizes, **env):
    import json
    import os
    import subprocess
    import sys

    from tests.factories import ROOT
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(sizes)], cwd=ROOT,
                         env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serve_maps_photo_sized_blocks_on_their_own():
    from fer_core.commands.serve import MMAP_THRESHOLD
    assert MMAP_THRESHOLD <= 2**20  # a 640x480 colour decode (921,600 bytes) is mapped
    got = _probe_malloc([MMAP_THRESHOLD, MMAP_THRESHOLD // 2])
    assert got["env"] == {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),  # for the workers too
                          "MALLOC_ARENA_MAX": "2"}
    assert got["mapped"] == {str(MMAP_THRESHOLD): True, str(MMAP_THRESHOLD // 2): False}


def test_an_operators_malloc_settings_are_kept():
    got = _probe_malloc([2**20, 8 * 2**20], MALLOC_MMAP_THRESHOLD_=str(8 * 2**20),
                        MALLOC_ARENA_MAX="4")
    assert got["env"] == {"MALLOC_MMAP_THRESHOLD_": str(8 * 2**20), "MALLOC_ARENA_MAX": "4"}
    assert got["mapped"] == {str(2**20): False, str(8 * 2**20): True}
