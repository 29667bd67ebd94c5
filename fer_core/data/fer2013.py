"""FER2013 CSV (`emotion,pixels,Usage`), plain, .gz or .zip, parsed without a per-value loop.

The pixel columns of all rows are joined into one byte buffer and decoded with NumPy: digit runs
are found with boolean masks, their values computed from the last three digits, and each run is
assigned to its row with ``searchsorted``. Every row is validated (pixel count, characters, value
range, label, Usage) and a bad row is named by its line number in the file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from fer_core.data.dataset import Dataset
from fer_core.errors import FerError
from fer_core.labels import FER7

N_PIXELS = 48 * 48
USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
REQUIRED = ("emotion", "pixels")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed for .gz (accelerated gzip) and .zip (its one CSV)."""
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            from isal import igzip
            with igzip.open(path, "rb") as f:
                return f.read()
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist()
                           if m.lower().endswith(".csv") and not m.startswith("__MACOSX")]
                if len(members) != 1:
                    raise FerError(f"expected exactly one .csv inside the zip, found {members}",
                                   where=str(path))
                return zf.read(members[0])
        return path.read_bytes()
    except FerError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise FerError(f"cannot read file ({e})", where=str(path)) from None


def header_of(data: bytes) -> list[str]:
    first = data[:4096].split(b"\n", 1)[0]
    return [c.strip().strip('"').strip().lower()
            for c in first.decode("utf-8", "replace").lstrip("\ufeff").split(",")]


def parse(data: bytes, where: str, strict: bool = True) -> Dataset:
    """Parse FER2013 CSV bytes. ``where`` names the file in messages."""
    if not data.strip():
        raise FerError("file is empty; expected a header 'emotion,pixels,Usage' and rows",
                       where=where)
    lines = data.split(b"\n")
    cols = header_of(lines[0])
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise FerError(f"missing column(s) {missing}; found {cols}, expected "
                       "'emotion,pixels,Usage'", where=where)
    i_emo, i_pix = cols.index("emotion"), cols.index("pixels")
    i_use = cols.index("usage") if "usage" in cols else None
    ncol = len(cols)

    bad: dict[int, str] = {}      # row number (0-based data row) -> reason
    line_no: list[int] = []       # file line number of each data row
    emotions: list[int] = []
    usages: list[str] = []
    pixels: list[bytes] = []
    for ln, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        r = len(line_no)
        line_no.append(ln)
        fields = raw.split(b",")
        if len(fields) != ncol:
            bad[r] = f"has {len(fields)} fields, expected {ncol}"
            emotions.append(0), usages.append("train"), pixels.append(b"")
            continue
        pixels.append(fields[i_pix].strip().strip(b'"'))
        emo = fields[i_emo].strip().strip(b'"')
        try:
            e = int(emo)
            if not 0 <= e < len(FER7):
                raise ValueError
        except ValueError:
            bad[r] = f"emotion {emo.decode(errors='replace')!r} is not an integer 0-6"
            e = 0
        emotions.append(e)
        if i_use is None:
            usages.append("")
        else:
            use = fields[i_use].strip().strip(b'"').decode(errors="replace")
            split = USAGE.get(use.lower())
            if split is None:
                bad.setdefault(r, f"Usage {use!r} is not Training, PublicTest or PrivateTest")
                split = "train"
            usages.append(split)
    n = len(line_no)
    if n == 0:
        raise FerError("file has a header but no data rows", where=where)

    images, pix_bad = _decode_pixels(pixels)
    for r, reason in pix_bad.items():
        bad.setdefault(r, reason)

    if bad and strict:
        r = min(bad)
        more = f" ({len(bad) - 1} more bad row(s); load with strict=False to skip them)" \
            if len(bad) > 1 else ""
        raise FerError(f"{bad[r]}{more}", where=f"{where}, line {line_no[r]}")
    keep = np.ones(n, dtype=bool)
    keep[list(bad)] = False
    if not keep.any():
        raise FerError(f"no valid rows (first problem, line {line_no[min(bad)]}: "
                       f"{bad[min(bad)]})", where=where)
    skipped = [(f"{where}, line {line_no[r]}", bad[r]) for r in sorted(bad)]
    split = np.asarray(usages, dtype=object)[keep]
    if i_use is None:
        split = _default_split(np.asarray(emotions)[keep])
    return Dataset(images=images[keep], labels=np.asarray(emotions, dtype=np.int64)[keep],
                   split=split.astype("U5"), label_names=FER7, source=where,
                   label_set="fer7", skipped=skipped)


def _default_split(labels: np.ndarray) -> np.ndarray:
    from fer_core.data.splits import stratified_split
    return stratified_split(labels)


def _decode_pixels(pixels: list[bytes]) -> tuple[np.ndarray, dict[int, str]]:
    """Decode space-separated pixel strings into uint8 (N,48,48); bad rows map to reasons.

    Validation is vectorised over the joined bytes (characters, digit runs, values per row);
    the numbers themselves are parsed in C by ``np.fromstring``.
    """
    n = len(pixels)
    bad: dict[int, str] = {}
    blob = b" ".join(pixels) + b" "
    arr = np.frombuffer(blob, dtype=np.uint8)
    row_start = np.zeros(n, dtype=np.int64)
    np.cumsum(np.fromiter((len(p) + 1 for p in pixels), dtype=np.int64, count=n)[:-1],
              out=row_start[1:])

    def rows_of(mask: np.ndarray) -> list[int]:
        return np.unique(np.searchsorted(row_start, np.flatnonzero(mask), side="right") - 1
                         ).tolist()

    digit = (arr - np.uint8(48)) < 10
    for r in rows_of(~digit & (arr != 32)):
        bad[r] = (f"pixels contain a non-numeric character; expected {N_PIXELS} integers "
                  "0-255 separated by spaces")
    for r in rows_of(digit[3:] & digit[2:-1] & digit[1:-2] & digit[:-3]):
        bad.setdefault(r, "pixel value above 255; expected integers 0-255")
    starts = digit.copy()
    starts[1:] &= ~digit[:-1]
    counts = np.add.reduceat(starts, row_start, dtype=np.int64)
    for r in np.flatnonzero(counts != N_PIXELS).tolist():
        bad.setdefault(r, f"has {counts[r]} pixel values, expected {N_PIXELS} (48x48)")
    del digit, starts

    good = np.ones(n, dtype=bool)
    good[list(bad)] = False
    images = np.zeros((n, 48, 48), dtype=np.uint8)
    if not good.any():
        return images, bad
    if bad:
        blob = b" ".join(p for p, g in zip(pixels, good) if g) + b" "
    values = np.fromstring(blob, dtype=np.uint16, sep=" ").reshape(-1, N_PIXELS)
    over = values.max(axis=1) > 255
    good_rows = np.flatnonzero(good)
    for r in good_rows[over].tolist():
        bad[r] = "pixel value above 255; expected integers 0-255"
    images[good_rows[~over]] = values[~over].astype(np.uint8).reshape(-1, 48, 48)
    return images, bad


def load(path: Path, strict: bool = True) -> Dataset:
    return parse(read_bytes(path), where=str(path), strict=strict)


def to_csv_bytes(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> bytes:
    """Write faces in the FER2013 CSV format (the inverse of ``parse``)."""
    usage = {v: k for k, v in {"Training": "train", "PublicTest": "val",
                               "PrivateTest": "test"}.items()}
    out = io.StringIO()
    out.write("emotion,pixels,Usage\n")
    for img, lab, s in zip(images, labels, split):
        out.write(f"{int(lab)},{' '.join(map(str, img.reshape(-1).tolist()))},{usage[s]}\n")
    return out.getvalue().encode()
