"""Install size, cold start and peak memory of ``predict`` per Python environment (medians).

For each ``--python`` interpreter (default: this one; pass the full install's and the runtime
install's to compare them side by side): the size of its site-packages, then ``--repeat``
runs of ``python -m fer_core predict IMAGE --json`` in a new process, each timed from process
start to answer (wall clock) with its peak RSS (``wait4``). Runs alternate between the
interpreters so both see the same machine load. Targets for the runtime install (issue 26):
site-packages <= 400 MB, cold predict <= 1.5 s and >= 4x faster than the full install, peak
RSS <= 250 MB. Noisy on a shared machine: compare the columns of one run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"site_packages_mb": 400.0, "cold_predict_s": 1.5, "peak_rss_mb": 250.0,
           "speedup_vs_first": 4.0}


def add_arguments(p) -> None:
    p.add_argument("--python", action="append", default=None,
                   help="interpreter to measure (repeat the option; default: this one)")
    p.add_argument("--image", default=None, help="photo (default: a drawn face)")
    p.add_argument("--repeat", type=int, default=5, help="runs per interpreter (default 5)")


def _site_packages(python: str) -> tuple[str, float]:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    du = subprocess.run(["du", "-sm", path], capture_output=True, text=True, check=True)
    return path, float(du.stdout.split()[0])


def _cold(python: str, image: str, cwd: str) -> tuple[float, float]:
    """(seconds from process start to answer, peak RSS MB) of one predict."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "fer_core", "predict", image, "--json"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} predict exited {proc.returncode}: "
                           f"{proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024.0


def run(args) -> dict:
    import cv2

    pythons = args.python or [sys.executable]
    with tempfile.TemporaryDirectory(prefix="fer-bench-runtime-") as tmp:
        image = args.image
        if image is None:
            from fer_core.synthetic import synthetic_frame
            image = str(Path(tmp) / "face.png")
            cv2.imwrite(image, synthetic_frame())
        times = {p: [] for p in pythons}
        rss = {p: [] for p in pythons}
        for p in pythons:  # warm the page cache once: every measured run is equally "cold"
            _cold(p, image, tmp)
        for _ in range(max(1, args.repeat)):
            for p in pythons:
                s, m = _cold(p, image, tmp)
                times[p].append(s)
                rss[p].append(m)
        rows = []
        for p in pythons:
            path, mb = _site_packages(p)
            rows.append({"python": p, "site_packages": path, "site_packages_mb": mb,
                         "cold_predict_s": round(statistics.median(times[p]), 2),
                         "cold_predict_runs_s": [round(t, 2) for t in times[p]],
                         "peak_rss_mb": round(statistics.median(rss[p]), 1)})
    first = rows[0]["cold_predict_s"]
    for r in rows[1:]:
        r["speedup_vs_first"] = round(first / r["cold_predict_s"], 2)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"environments": rows, "repeat": args.repeat, "load_average": load,
            "targets": TARGETS}
