"""Install size, cold start and peak memory of ``predict`` per Python environment (medians).

For each ``--python`` interpreter (default: this one; pass the full install's and the runtime
install's to compare them side by side): the size of its site-packages (``du``; per installed
distribution from the files its RECORD lists; ``installed_mb`` leaves out the virtualenv's own
pip, setuptools and wheel, which ``python -m venv`` puts there before anything is installed),
then ``--repeat``
runs of ``python -m fer_core predict IMAGE --json`` in a new process, each timed from process
start to answer (wall clock) with its peak RSS (``wait4``). Runs alternate between the
interpreters so both see the same machine load. Targets for the runtime install (issue 26):
site-packages <= 400 MB, cold predict <= 1.5 s and >= 4x faster than the full install, peak
RSS <= 250 MB. Noisy on a shared machine: compare the columns of one run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fer_core.errors import FerError
from fer_core.paths import ROOT

TARGETS = {"site_packages_mb": 400.0, "cold_predict_s": 1.5, "peak_rss_mb": 250.0,
           "speedup_vs_first": 4.0}


def add_arguments(p) -> None:
    p.add_argument("--python", action="append", default=None,
                   help="interpreter to measure (repeat the option; default: this one)")
    p.add_argument("--image", default=None, help="photo (default: a drawn face)")
    p.add_argument("--repeat", type=int, default=5, help="runs per interpreter (default 5)")


VENV_TOOLS = ("pip", "setuptools", "wheel")

# run by the measured interpreter: disk use (as du counts it) of the files each installed
# distribution's RECORD lists (a file counted once), and of the files no RECORD lists
# (__pycache__ written at run time)
_SIZES = r"""
import json, os, sysconfig
from importlib import metadata
from pathlib import Path
sp = Path(sysconfig.get_paths()["purelib"]).resolve()
seen, dists = set(), {}
for d in metadata.distributions(path=[str(sp)]):
    total = 0
    for f in d.files or ():
        p = (sp / f).resolve()
        if p not in seen and p.is_file():
            seen.add(p)
            total += os.stat(p).st_blocks * 512
    dists[d.metadata["Name"]] = dists.get(d.metadata["Name"], 0) + total
other = sum(os.lstat(Path(r, f)).st_blocks * 512 for r, _, fs in os.walk(sp) for f in fs
            if Path(r, f).resolve() not in seen)
print(json.dumps({"path": str(sp), "dists": dists, "other": other}))
"""


def site_packages(python: str, top: int = 12) -> dict:
    """Size of ``python``'s site-packages: ``site_packages_mb`` (du), ``installed_mb`` (without
    the virtualenv's pip/setuptools/wheel), ``packages_mb`` (the ``top`` largest distributions,
    MB, largest first) and ``unrecorded_mb`` (files no distribution lists: run-time bytecode)."""
    out = subprocess.run([python, "-c", _SIZES], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    du = subprocess.run(["du", "-sm", got["path"]], capture_output=True, text=True, check=True)
    total = float(du.stdout.split()[0])
    mb = {k: v / 2**20 for k, v in got["dists"].items()}
    tools = sum(v for k, v in mb.items() if k.lower() in VENV_TOOLS)
    ranked = sorted(mb.items(), key=lambda kv: -kv[1])
    return {"site_packages": got["path"], "site_packages_mb": total,
            "installed_mb": round(total - tools, 1), "venv_tools_mb": round(tools, 1),
            "packages_mb": {k: round(v, 1) for k, v in ranked[:top]},
            "unrecorded_mb": round(got["other"] / 2**20, 1)}


def _env(python: str, cwd: str) -> dict:
    """The environment to run ``python -m fer_core`` in ``cwd``: as it is where the package is
    installed; with this checkout on PYTHONPATH where it is not (a checkout's .venv)."""
    from fer_core.settings import child_env
    found = subprocess.run([python, "-c", "import fer_core"], cwd=cwd, env=child_env(),
                           capture_output=True).returncode == 0
    return child_env() if found else child_env(pythonpath=ROOT)


def _cold(python: str, image: str, cwd: str, env: dict) -> tuple[float, float]:
    """(seconds from process start to answer, peak RSS MB) of one predict."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "fer_core", "predict", image, "--json"], cwd=cwd,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise FerError(f"predict exited {proc.returncode}: "
                       f"{proc.stderr.read().decode(errors='replace')[-500:]}", where=python)
    return seconds, usage.ru_maxrss / 1024.0


def run(args) -> dict:
    import cv2

    pythons = [os.path.abspath(p) if os.sep in p else p for p in args.python or [sys.executable]]
    with tempfile.TemporaryDirectory(prefix="fer-bench-runtime-") as tmp:
        image = args.image
        if image is None:
            from fer_core.synthetic import synthetic_frame
            image = str(Path(tmp) / "face.png")
            cv2.imwrite(image, synthetic_frame())
        times = {p: [] for p in pythons}
        rss = {p: [] for p in pythons}
        envs = {p: _env(p, tmp) for p in pythons}
        for p in pythons:  # warm the page cache once: every measured run is equally "cold"
            _cold(p, image, tmp, envs[p])
        for _ in range(max(1, args.repeat)):
            for p in pythons:
                s, m = _cold(p, image, tmp, envs[p])
                times[p].append(s)
                rss[p].append(m)
        rows = []
        for p in pythons:
            rows.append({"python": p, **site_packages(p),
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
