"""Bounded dataset reading: a zip/gzip whose uncompressed size passes ``FER_DATA_MAX_MB``, or a
CSV line longer than any FER row, stops with a clear FerError before much is inflated, in the
Python API (``fer_core.data.load``), the CLI (``info``) and the app's upload path."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest

from fer_core import data
from fer_core.errors import FerError
from tests.factories import ROOT

MB = 1 << 20


def zip_bomb(path, n_mb: int, name: str = "data.csv"):
    """A real zip whose ``name`` inflates to ``n_mb`` MB of NUL bytes (a 1 MB deflate block
    repeated, so it is cheap to make: the issue's 2 MB zip holding 2 GB as data.csv)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * MB) + c.flush(zlib.Z_FULL_FLUSH)
    body = block * n_mb + b"\x03\x00"  # then an empty final block
    crc, size = 0, n_mb * MB
    for _ in range(n_mb if n_mb <= 64 else 0):  # true CRC when cheap; never checked otherwise
        crc = zlib.crc32(b"\0" * MB, crc)
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), size,
                        len(fname), 0) + fname
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body),
                          size, len(fname), 0, 0, 0, 0, 0, 0) + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                      len(local) + len(body), 0)
    path.write_bytes(local + body + central + end)
    return path


def test_the_bomb_maker_makes_a_real_zip(tmp_path):
    p = zip_bomb(tmp_path / "small.zip", 3)
    with zipfile.ZipFile(p) as zf:
        assert zf.read("data.csv") == b"\0" * (3 * MB)  # CRC and sizes check out


def test_a_2_gb_zip_bomb_is_refused_at_the_default_cap_before_inflating(tmp_path):
    p = zip_bomb(tmp_path / "bomb.zip", 2048)
    assert p.stat().st_size < 3 * MB
    with pytest.raises(FerError, match=r"passes the 1024 MB limit .*FER_DATA_MAX_MB") as e:
        data.load(p, cache=False)
    assert str(p) in str(e.value)


def test_a_never_ending_line_is_refused_within_one_block(tmp_path):
    p = zip_bomb(tmp_path / "nul.zip", 200)  # under the cap, but one 200 MB "line"
    with pytest.raises(FerError, match=r"line 1: line is longer than 64 KB; a FER2013 row"):
        data.load(p, cache=False)
    long_row = tmp_path / "long.csv"
    long_row.write_bytes(b"emotion,pixels,Usage\n0," + b"1 " * 40000 + b",Training\n")
    with pytest.raises(FerError, match=r"long.csv, line 2: line is longer than 64 KB"):
        data.load(long_row, cache=False)


def test_a_gzip_past_a_low_cap_is_refused_while_streaming(tmp_path, monkeypatch):
    row = b"0," + b" ".join([b"128"] * 2304) + b",Training\n"
    p = tmp_path / "big.csv.gz"
    p.write_bytes(gzip.compress(b"emotion,pixels,Usage\n" + row * 400, 1))  # ~3.7 MB inflated
    assert data.load(p, cache=False).images.shape == (400, 48, 48)
    monkeypatch.setenv("FER_DATA_MAX_MB", "2")
    with pytest.raises(FerError, match="passes the 2 MB limit"):
        data.load(p, cache=False)
    monkeypatch.setenv("FER_DATA_MAX_MB", "0.5")
    with pytest.raises(FerError, match=r"passes the 0.5 MB limit"):  # zip: declared size
        data.load(zip_bomb(tmp_path / "one.zip", 1), cache=False)
    monkeypatch.setenv("FER_DATA_MAX_MB", "lots")
    with pytest.raises(FerError, match="FER_DATA_MAX_MB: expected a number"):
        data.load(p, cache=False)


def test_cli_info_and_the_app_upload_path_refuse_a_bomb_in_bounded_memory(tmp_path):
    p = zip_bomb(tmp_path / "nul.zip", 512)  # the 512 MB version (1.1 GB peak before)
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
             "capture_output=True, text=True); sys.stderr.write(r.stderr); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "fer_core", "info",
                        str(p)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FER_CACHE_DIR": str(tmp_path / "cache")})
    code, maxrss_kb = map(int, r.stdout.split())
    assert code == 2 and "line 1: line is longer than 64 KB" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert maxrss_kb < 400 * 1024, maxrss_kb

    ui_data = pytest.importorskip("ui.data")  # the Dataset Explorer's upload: save, then load
    saved = ui_data.save_upload("bomb.zip", p.read_bytes())
    try:
        with pytest.raises(FerError, match="line is longer than 64 KB"):
            ui_data.load_dataset(str(saved))
    finally:
        saved.unlink(missing_ok=True)
