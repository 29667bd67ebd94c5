"""FER2013 CSV loader: formats, every bad-input case (strict and lenient), cache, imports."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fer_core import data
from fer_core.data import fer2013
from fer_core.errors import FerError
from fer_core.labels import FER7

ROW = " ".join(str(i % 256) for i in range(2304))


def good_rows(n=6):
    uses = ["Training", "Training", "Training", "Training", "PublicTest", "PrivateTest"]
    return [f"{i % 7},{' '.join(str((i * 7 + j) % 256) for j in range(2304))},{uses[i % 6]}"
            for i in range(n)]


def write(tmp_path, text: str, fmt: str, name="fer"):
    raw = text.encode()
    if fmt == "csv":
        p = tmp_path / f"{name}.csv"
        p.write_bytes(raw)
    elif fmt == "gz":
        p = tmp_path / f"{name}.csv.gz"
        p.write_bytes(gzip.compress(raw))
    else:
        p = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("fer2013.csv", raw)
    return p


FORMATS = ["csv", "gz", "zip"]
HEADER = "emotion,pixels,Usage"

# (name, bad line, expected words in the reason)
BAD_ROWS = [
    ("short", f"3,{' '.join(['1'] * 2000)},Training", "2000 pixel values"),
    ("long", f"3,{' '.join(['1'] * 2305)},Training", "2305 pixel values"),
    ("non-numeric", f"3,{ROW[:-3]} ab,Training", "non-numeric"),
    ("negative", f"3,-1 {ROW[2:]},Training", "non-numeric"),
    ("above 255", f"3,300 {ROW[2:]},Training", "above 255"),
    ("huge", f"3,99999999999 {ROW[2:]},Training", "above 255"),
    ("label out of range", f"7,{ROW},Training", "emotion '7'"),
    ("label not a number", f"x,{ROW},Training", "emotion 'x'"),
    ("unknown usage", f"3,{ROW},Validation", "Usage 'Validation'"),
    ("wrong field count", f"3,{ROW},Training,extra", "4 fields, expected 3"),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_loads_every_format(tmp_path, fmt):
    p = write(tmp_path, "\n".join([HEADER] + good_rows(12)) + "\n", fmt)
    ds = data.load(p, cache=False)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (12, 48, 48)
    assert ds.labels.tolist() == [i % 7 for i in range(12)]
    assert ds.counts()["train"]["total"] == 8 and ds.counts()["val"]["total"] == 2
    assert ds.counts()["test"]["total"] == 2
    assert ds.images[1].reshape(-1)[:3].tolist() == [7, 8, 9]
    assert ds.label_names == FER7 and not ds.skipped


def test_roundtrip_csv_writer_and_crlf(tmp_path):
    rng = np.random.default_rng(1)
    im = rng.integers(0, 256, (30, 48, 48), dtype=np.uint8)
    lab = rng.integers(0, 7, 30)
    sp = np.array(["train", "val", "test"])[rng.integers(0, 3, 30)]
    raw = fer2013.to_csv_bytes(im, lab, sp)
    p = tmp_path / "rt.csv"
    p.write_bytes(raw.replace(b"\n", b"\r\n"))
    ds = data.load(p, cache=False)
    assert np.array_equal(ds.images, im) and np.array_equal(ds.labels, lab)
    assert ds.split.tolist() == sp.tolist()


def test_irregular_whitespace_still_parses(tmp_path):
    vals = list(range(2304))
    pix = "  ".join(str(v % 256) for v in vals)          # double spaces
    p = write(tmp_path, f"{HEADER}\n0,{pix},Training\n1,{ROW},PublicTest\n", "csv")
    ds = data.load(p, cache=False)
    assert ds.images[0].reshape(-1)[:5].tolist() == [0, 1, 2, 3, 4]
    assert len(ds) == 2


def test_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(fer2013, "BLOCK", 20000)        # forces ~3 rows per block
    rows = good_rows(20)
    rows[13] = f"3,{' '.join(['1'] * 10)},Training"
    p = write(tmp_path, "\n".join([HEADER] + rows) + "\n", "gz")
    with pytest.raises(FerError, match="line 15"):
        data.load(p, cache=False)
    ds = data.load(p, cache=False, strict=False)
    assert len(ds) == 19 and ds.skipped[0][0].endswith("line 15")
    assert ds.labels.tolist() == [i % 7 for i in range(20) if i != 13]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_row_strict_and_lenient(tmp_path, fmt, case):
    name, bad, words = case
    rows = good_rows(6)
    rows.insert(2, bad)                     # file line 4
    p = write(tmp_path, "\n".join([HEADER] + rows) + "\n", fmt)
    with pytest.raises(FerError) as e:
        data.load(p, cache=False)
    msg = str(e.value)
    assert p.name in msg and "line 4" in msg and words in msg
    ds = data.load(p, cache=False, strict=False)
    assert len(ds) == 6
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("line 4")
    assert words in ds.skipped[0][1]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text,words", [
    ("", "empty"),
    ("\n\n", "empty"),
    (HEADER + "\n", "no data rows"),
    ("label,pixels,Usage\n0," + ROW + ",Training\n", "missing column(s) ['emotion']"),
    ("emotion,Usage\n0,Training\n", "missing column(s) ['pixels']"),
], ids=["empty", "blank-lines", "header-only", "no-emotion", "no-pixels"])
def test_bad_file(tmp_path, fmt, text, words):
    p = write(tmp_path, text, fmt)
    for strict in (True, False):
        with pytest.raises(FerError) as e:
            data.load(p, cache=False, strict=strict)
        assert words in str(e.value) and p.name in str(e.value)


def test_all_rows_bad_lenient(tmp_path):
    p = write(tmp_path, f"{HEADER}\n9,{ROW},Training\n", "csv")
    with pytest.raises(FerError, match="no valid rows"):
        data.load(p, cache=False, strict=False)


def test_corrupt_archives(tmp_path):
    gz = tmp_path / "bad.csv.gz"
    gz.write_bytes(b"this is not gzip data at all")
    zp = tmp_path / "bad.zip"
    zp.write_bytes(b"PK not a zip")
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    for p, words in ((gz, "cannot read"), (zp, "cannot read"), (two, "exactly one .csv")):
        with pytest.raises(FerError, match=words):
            data.load(p, cache=False)
    with pytest.raises(FerError, match="no such file"):
        data.load(tmp_path / "missing.csv")


def test_without_usage_column_gets_stratified_split(tmp_path):
    rows = [f"{i % 7},{ROW}" for i in range(70)]
    p = write(tmp_path, "\n".join(["emotion,pixels"] + rows) + "\n", "csv")
    a = data.load(p, cache=False)
    b = data.load(p, cache=False)
    assert a.split.tolist() == b.split.tolist()
    for c in range(7):
        assert sorted(a.split[a.labels == c].tolist()) == ["test"] + ["train"] * 8 + ["val"]


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    p = write(tmp_path, "\n".join([HEADER] + good_rows(6)) + "\n", "csv")
    first = data.load(p)
    assert list((tmp_path / "cache").glob("*.npz"))
    calls = []
    monkeypatch.setattr(fer2013, "load", lambda *a, **k: calls.append(1))
    again = data.load(p)                   # served from the cache, parser not called
    assert not calls and np.array_equal(again.images, first.images)
    assert again.split.tolist() == first.split.tolist()
    monkeypatch.undo()
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    p.write_text("\n".join([HEADER] + good_rows(3)) + "\n")
    import os
    os.utime(p, ns=(1, 10**18))
    assert len(data.load(p)) == 3          # file changed -> parsed again


def test_import_does_not_pull_tensorflow():
    code = ("import sys, fer_core.data, fer_core.data.stats, fer_core.data.folders, "
            "fer_core.data.ferplus, fer_core.data.demo; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_shared_fer2013_counts(fer2013_path):
    ds = data.load(fer2013_path, cache=False)
    c = ds.counts()
    assert c["train"]["total"] == 28709 and c["val"]["total"] == 3589
    assert "test" not in c and len(ds) == 32298 and not ds.skipped
    assert c["train"]["per_class"] == {"angry": 3995, "disgust": 436, "fear": 4097,
                                       "happy": 7215, "sad": 4830, "surprise": 3171,
                                       "neutral": 4965}
    assert c["val"]["per_class"] == {"angry": 467, "disgust": 56, "fear": 496, "happy": 895,
                                     "sad": 653, "surprise": 415, "neutral": 607}
    assert ds.images.dtype == np.uint8
