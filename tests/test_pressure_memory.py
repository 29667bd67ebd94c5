"""Corrupt huge images do not keep memory: a real ``serve`` answers rounds of 4 concurrent
batches of 16 truncated PNGs whose headers say 6300x6300 16-bit RGBA, and its RSS stays within
issue 25's bounds (peak <= 1.5 GB above idle, back within 300 MB of idle). Before the fix each
failed decode's buffer lived on in reference cycles: +2.5 GB, kept when idle."""

from __future__ import annotations

import argparse
import io

from PIL import Image

from fer_core.bench import soak


def test_the_truncated_png_is_what_the_issue_describes():
    data = soak.truncated_png()
    im = Image.open(io.BytesIO(data))
    assert im.size == (6300, 6300) and 60_000 < len(data) < 100_000
    assert data[24:26] == bytes([16, 6])  # 16-bit, RGBA


def test_a_burst_of_truncated_16_bit_pngs_leaves_no_memory_behind():
    args = argparse.Namespace(minutes=0, clients=8, burst_rounds=2, idle_seconds=5, workers=1,
                              burst_image="truncated",
                              model=None, env=[])
    out = soak.run(args)
    burst = out["burst"]
    assert burst["by_status"] == {"200": 8} and out["server_log_tracebacks"] == 0, out
    assert burst["peak_above_idle_mb"] <= 1536, burst
    assert burst["after_idle_above_idle_mb"] <= 300, burst
