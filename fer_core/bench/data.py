"""FER2013 CSV load time: naive pandas parse vs our cold load vs a warm (cached) load.

Each measurement runs in a fresh interpreter (``python -c``) and its wall time includes the
interpreter start and imports, like a user running a script. One run measures all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fer_core import ROOT
from fer_core.settings import child_env

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz"

NAIVE = """
import sys, numpy as np, pandas as pd
df = pd.read_csv(sys.argv[1])
images = np.stack([np.array(s.split(), dtype=np.uint8) for s in df["pixels"]]).reshape(-1, 48, 48)
print(len(images))
"""

OURS = """
import sys
from fer_core import data
ds = data.load(sys.argv[1], cache=sys.argv[2] == "cache")
print(len(ds))
"""


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="FER2013 CSV to load (default: ../shared/data/fer2013/fer2013.csv.gz)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per measurement; the best (minimum) is reported")


def _time(code: str, *argv: str, env: dict, cpu: list | None = None) -> tuple[float, str]:
    """Wall seconds of a fresh interpreter running ``code``; its CPU seconds go to ``cpu``."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        from fer_core.errors import FerError
        raise FerError(f"benchmark subprocess failed: {proc.stderr.strip()[-500:]}",
                       where="bench data")
    return dt, proc.stdout.strip()


def run(args) -> dict:
    from fer_core.errors import FerError

    path = Path(args.data).expanduser()
    if not path.exists():
        raise FerError("no such file (get FER2013 from Kaggle, or pass --data PATH)",
                       where=str(path))
    repeat = max(1, int(args.repeat))
    with tempfile.TemporaryDirectory(prefix="fer-bench-cache-") as cache:
        env = child_env({"FER_CACHE_DIR": cache}, pythonpath=ROOT)
        c_naive, c_cold, c_warm = [], [], []
        naive = min(_time(NAIVE, str(path), env=env, cpu=c_naive)[0] for _ in range(repeat))
        cold, n = min(_time(OURS, str(path), "nocache", env=env, cpu=c_cold)
                      for _ in range(repeat))
        _time(OURS, str(path), "cache", env=env)              # fill the cache
        warm = min(_time(OURS, str(path), "cache", env=env, cpu=c_warm)[0]
                   for _ in range(repeat))
        start = min(_time("import numpy", env=env)[0] for _ in range(repeat))
    return {"data": str(path), "rows": int(n), "repeat": repeat,
            "interpreter_start_s": round(start, 3),
            "naive_pandas_s": round(naive, 3),
            "cold_load_s": round(cold, 3),
            "warm_load_s": round(warm, 3),
            "speedup_cold_vs_naive": round(naive / cold, 2),
            "speedup_warm_vs_naive": round(naive / warm, 2),
            "naive_pandas_cpu_s": round(min(c_naive), 3),
            "cold_load_cpu_s": round(min(c_cold), 3),
            "warm_load_cpu_s": round(min(c_warm), 3),
            "speedup_cold_vs_naive_cpu": round(min(c_naive) / max(min(c_cold), 1e-9), 2),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2)}
