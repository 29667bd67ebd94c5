"""``python -m fer_core info`` and ``bench data`` on files the tests write."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace

import numpy as np

from fer_core.cli import main
from fer_core.data import fer2013


def write_csv(path, n=14, blank=True, dup=True):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    if blank:
        im[0] = 0
    if dup:
        im[n - 1] = im[1]
    lab = np.arange(n) % 7
    sp = np.array(["train"] * (n - 2) + ["val", "test"])
    path.write_bytes(fer2013.to_csv_bytes(im, lab, sp))
    return path


def test_info_json(tmp_path, capsys):
    p = write_csv(tmp_path / "f.csv")
    assert main(["info", str(p), "--json", "--no-cache"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["train"]["total"] == 12
    assert out["splits"]["train"]["per_class"]["angry"] == 2
    assert out["flagged"]["blank"] == 1
    assert out["flagged"]["duplicates_across_splits"] == 1
    assert out["blank_examples"] == [0]


def test_info_text(tmp_path, capsys):
    p = write_csv(tmp_path / "f.csv")
    assert main(["info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "14 faces" in text and "1 blank" in text and "across splits" in text


def test_info_bad_data_exit_2(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    proc = subprocess.run([sys.executable, "-m", "fer_core", "info", str(p)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.csv, line 2" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    proc = subprocess.run([sys.executable, "-m", "fer_core", "info", str(p), "--lenient",
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no valid rows" in proc.stderr


def test_bench_data_small_file(tmp_path):
    from fer_core.bench import data as bench

    p = write_csv(tmp_path / "f.csv.gz".replace(".gz", ""))
    result = bench.run(Namespace(data=str(p), repeat=1))
    assert result["rows"] == 14
    for key in ("naive_pandas_s", "cold_load_s", "warm_load_s"):
        assert result[key] > 0
    assert result["speedup_cold_vs_naive"] > 0
