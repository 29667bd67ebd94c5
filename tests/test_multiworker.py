"""Training across processes: two ``python -m fer_core train`` workers with ``TF_CONFIG`` on
loopback ports (``MultiWorkerMirroredStrategy``) train one epoch together, on a small FER2013-format
CSV the test writes (the strategy, not the data size, is under test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.factories import ROOT, free_port, pattern_faces, write_fer_csv


def test_two_workers_train_one_epoch_only_the_chief_writes(tmp_path):
    data = write_fer_csv(pattern_faces(n_per_class=24, splits=("train", "val", "test")),
                         tmp_path / "faces.csv")
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, dirs = [], []
    for index in (0, 1):
        d = {name: tmp_path / f"{name}-{index}" for name in ("cwd", "tmp", "out", "log")}
        for name in ("cwd", "tmp"):
            d[name].mkdir()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(d["tmp"]),
               "PYTHONPATH": str(ROOT), "FER_RUNS_DIR": str(d["cwd"] / "runs"),
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        cmd = [sys.executable, "-m", "fer_core", "train", str(data), "--arch",
               "mini_xception", "--epochs", "1", "--batch-size", "32", "--no-cache", "--quiet",
               "--json", "--out", str(d["out"])]
        log = open(d["log"], "w")
        procs.append((subprocess.Popen(cmd, cwd=d["cwd"], env=env, stdout=subprocess.PIPE,
                                       stderr=log, text=True), log))
        dirs.append(d)
    outputs = []
    try:
        for proc, _ in procs:
            outputs.append(proc.communicate(timeout=480)[0])
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for (proc, _), d in zip(procs, dirs):
        assert proc.returncode == 0, d["log"].read_text()[-3000:]

    chief, worker = dirs
    summary = json.loads(outputs[0])
    assert summary["status"] == "finished"
    run = chief["out"]
    for name in ("model.keras", "config.json", "history.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    # the non-chief worker leaves nothing behind: no run dir, no scratch files, nothing in cwd
    assert not worker["out"].exists()
    assert list(worker["tmp"].iterdir()) == []
    assert list(worker["cwd"].iterdir()) == []

    # the chief's run loads and evaluates
    r = subprocess.run([sys.executable, "-m", "fer_core", "evaluate", "--model", str(run),
                        "--data", str(data), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads(r.stdout)
    assert ev["n"] == 7 * 24 and 0.0 <= ev["accuracy"] <= 1.0 and len(ev["labels"]) == 7
