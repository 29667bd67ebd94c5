"""Small job functions for the job-runner tests (imported by the child process)."""

from __future__ import annotations

import os
import time

from fer_core.errors import FerError


def count(spec: dict, ctx) -> dict:
    """Counts to ``spec["n"]``, one step every ``spec["sleep"]`` seconds, until stopped."""
    done = 0
    for i in range(int(spec["n"])):
        if ctx.stop_requested():
            break
        time.sleep(float(spec.get("sleep", 0.0)))
        done = i + 1
        ctx.progress(done, int(spec["n"]), pid=os.getpid())
    if spec.get("fail"):
        raise FerError("the count went wrong", where="spec")
    if spec.get("boom"):
        raise RuntimeError("boom")
    return {"counted": done}
