"""FER2013 CSV (`emotion,pixels,Usage`), plain, .gz or .zip, parsed in blocks without a per-value loop.

The file is streamed in blocks of whole lines (gzip is decompressed by ISA-L in a background
thread). Per line, Python only splits the three fields and checks the token count with C string
methods; the 2,304 numbers of all rows of a block are parsed in one call to ``np.fromstring``.
Characters, token counts, value range, label and Usage are validated for every row, and a bad
row is named by its line number in the file. Only uint8 images are kept; temporaries are
block-sized, so memory stays near the size of the result.

Reading is bounded: a line longer than :data:`MAX_LINE` (no real row comes near it) and
uncompressed data past ``FER_DATA_MAX_MB`` (:func:`max_uncompressed_bytes`; a zip's declared
size is checked before anything is inflated) stop with a FerError within one block, so a zip or
gzip bomb costs seconds and a few blocks of memory.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from fer_core.data.dataset import Dataset
from fer_core.errors import FerError
from fer_core.labels import FER7

N_PIXELS = 48 * 48
USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
USAGE_NAMES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
REQUIRED = ("emotion", "pixels")
BLOCK = 1 << 23          # bytes read per block (8 MiB, ~900 faces)
_ALLOWED = b"0123456789 \t"
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)
MAX_LINE = 1 << 16       # bytes; a FER2013 row is at most ~9.3 KB (2,304 values of <= 4 bytes)


def max_uncompressed_bytes() -> int:
    """The uncompressed size one dataset file may reach: ``FER_DATA_MAX_MB`` (default 1024)."""
    from fer_core.settings import get_settings
    return int(get_settings().data_max_mb * 2**20)


def _too_big(limit: int, where: str) -> FerError:
    return FerError(f"the uncompressed data passes the {limit / 2**20:g} MB limit (a FER "
                    "dataset is far smaller: a zip or gzip bomb, or raise FER_DATA_MAX_MB)",
                    where=where)


# ----------------------------------------------------------------------------- messages
# A message names the file, line and field but never quotes the file's content: a column name
# or cell value is shown only when it looks like one (short, letters/digits/._- and spaces).
_SHOWN = re.compile(r"[A-Za-z0-9_.+ -]{1,24}")


def shown_columns(header: list[str]) -> str:
    """The header's column names for a message, or only how many there are."""
    if len(header) <= 16 and all(_SHOWN.fullmatch(c) for c in header):
        return f"the columns {','.join(header)}"
    return f"{len(header)} field(s) that do not look like column names (not shown)"


def shown_value(value: bytes | str) -> str:
    """A cell value for a message (quoted), or 'value' when it does not look like one."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text) if _SHOWN.fullmatch(text) else "value (not shown)"


def read_problem(e: BaseException) -> str:
    """Why a file could not be read, without the exception's text (which may quote bytes)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, zipfile.BadZipFile):
        return "not a valid zip file"
    if isinstance(e, (zlib.error, EOFError, OSError)):
        return "not a valid or complete gzip/zip stream"
    return type(e).__name__


# ----------------------------------------------------------------------------- reading
@contextlib.contextmanager
def open_csv(path: Path) -> Iterator[IO[bytes]]:
    """A binary stream of the CSV inside ``path`` (.csv, .csv.gz or a .zip holding one .csv);
    reading past :func:`max_uncompressed_bytes` raises FerError."""
    path = Path(path)
    limit = max_uncompressed_bytes()
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            try:
                from isal import igzip_threaded
                f = igzip_threaded.open(path, "rb", threads=1, block_size=1 << 22)
            except ImportError:  # pragma: no cover - isal is a requirement
                import gzip
                f = gzip.open(path, "rb")
        elif name.endswith(".zip"):
            zf = zipfile.ZipFile(path)
            members = [m for m in zf.namelist()
                       if m.lower().endswith(".csv") and not m.startswith("__MACOSX")]
            if len(members) != 1:
                zf.close()
                raise FerError(f"expected exactly one .csv inside the zip, found {len(members)}",
                               where=str(path))
            if zf.getinfo(members[0]).file_size > limit:  # declared: nothing inflated yet
                zf.close()
                raise _too_big(limit, str(path))
            f = _ZipStream(zf, zf.open(members[0]))
        else:
            f = open(path, "rb")
    except FerError:
        raise
    except _READ_ERRORS as e:
        raise FerError(f"cannot read file ({read_problem(e)})", where=str(path)) from None
    f = _Capped(f, limit, str(path))
    try:
        yield f
    finally:
        with contextlib.suppress(Exception):
            f.close()


class _ZipStream(io.RawIOBase):
    """A zip member stream that closes its archive too."""

    def __init__(self, zf, member):
        self._zf, self._m = zf, member

    def read(self, n=-1):
        return self._m.read(n)

    def close(self):
        self._m.close()
        self._zf.close()
        super().close()


class _Capped:
    """A read-only stream that raises FerError once more than ``limit`` bytes were read."""

    def __init__(self, f, limit: int, where: str):
        self._f, self._limit, self._where, self.seen = f, limit, where, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # read all, but never more than the limit (+1 to notice)
            parts = []
            while chunk := self.read(BLOCK):
                parts.append(chunk)
            return b"".join(parts)
        data = self._f.read(min(n, self._limit + 1 - self.seen) or 1)
        self.seen += len(data)
        if self.seen > self._limit:
            raise _too_big(self._limit, self._where)
        return data

    def close(self) -> None:
        self._f.close()


def read_bytes(path: Path) -> bytes:
    """The whole decompressed CSV (small files, tests and format sniffing)."""
    with open_csv(path) as f:
        try:
            return f.read()
        except _READ_ERRORS as e:
            raise FerError(f"cannot read file ({read_problem(e)})", where=str(path)) from None


def read_header(path: Path) -> list[str]:
    """Lower-cased column names of the CSV's first line (reads only the start of the file)."""
    with open_csv(path) as f:
        try:
            first = f.read(4096)
        except _READ_ERRORS as e:
            raise FerError(f"cannot read file ({read_problem(e)})", where=str(path)) from None
    return header_of(first)


def header_of(data: bytes) -> list[str]:
    first = data[:65536].split(b"\n", 1)[0]
    return [c.strip().strip('"').strip().lower()
            for c in first.decode("utf-8", "replace").lstrip("\ufeff").split(",")]


def _line_blocks(f: IO[bytes], where: str) -> Iterator[list[bytes]]:
    """Lists of complete lines (without the newline), about BLOCK bytes each; FerError for a
    line longer than :data:`MAX_LINE`."""
    rest = b""
    n_lines = 0
    while True:
        try:
            chunk = f.read(BLOCK)
        except _READ_ERRORS as e:
            raise FerError(f"cannot read file ({read_problem(e)})", where=where) from None
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        _check_lines(lines, rest, n_lines, where)
        n_lines += len(lines)
        if lines:
            yield lines
    if rest:
        yield [rest]


def _check_lines(lines: list[bytes], rest: bytes, before: int, where: str) -> None:
    if len(rest) <= MAX_LINE and (not lines or max(map(len, lines)) <= MAX_LINE):
        return
    j = next((j for j, ln in enumerate(lines) if len(ln) > MAX_LINE), len(lines))
    raise FerError(f"line is longer than {MAX_LINE // 1024} KB; a FER2013 row is about 9 KB "
                   "('emotion,pixels,Usage' with 2,304 pixel values, one row per line): not a "
                   "FER2013 CSV, or its line ends are missing", where=f"{where}, line "
                   f"{before + j + 1}")


def _bytes_blocks(data: bytes) -> Iterator[list[bytes]]:
    lines = data.split(b"\n")
    step = max(1, BLOCK // 9300)
    for i in range(0, len(lines), step):
        yield lines[i:i + step]


# ----------------------------------------------------------------------------- parsing
def load(path: Path, strict: bool = True) -> Dataset:
    """Parse a FER2013 CSV file (.csv, .csv.gz, .zip), streaming it in blocks."""
    path = Path(path)
    with open_csv(path) as f:
        return _parse_blocks(_line_blocks(f, str(path)), where=str(path), strict=strict)


def parse(data: bytes, where: str, strict: bool = True) -> Dataset:
    """Parse FER2013 CSV bytes. ``where`` names the file in messages."""
    return _parse_blocks(_bytes_blocks(data), where=where, strict=strict)


def _parse_blocks(blocks: Iterator[list[bytes]], where: str, strict: bool) -> Dataset:
    ln = 0                 # file line number of the current line
    header = None
    bad: list[tuple[int, str]] = []          # (line, reason) of skipped rows
    images, emotions, splits = [], [], []
    n_use = None
    for lines in blocks:
        start = 0
        if header is None:
            # skip leading blank lines, then read the header
            while start < len(lines) and not lines[start].strip():
                start += 1
                ln += 1
            if start == len(lines):
                continue
            header = header_of(lines[start])
            ln += 1
            start += 1
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise FerError(f"missing column(s) {missing}; the first line has "
                               f"{shown_columns(header)}; expected the header "
                               "'emotion,pixels,Usage'", where=where)
            ncol = len(header)
            i_emo, i_pix = header.index("emotion"), header.index("pixels")
            i_use = header.index("usage") if "usage" in header else None
        blk_bad: list[tuple[int, str]] = []
        b_pix, b_ln, b_emo, b_use = [], [], [], []
        for raw in lines[start:] if start else lines:
            ln += 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw or raw.isspace():
                continue
            fields = raw.split(b",")
            if len(fields) != ncol:
                blk_bad.append((ln, f"has {len(fields)} fields, expected {ncol} "
                                    f"({shown_columns(header)})"))
                continue
            emo = fields[i_emo].strip().strip(b'"')
            if len(emo) == 1 and 48 <= emo[0] <= 54:
                e = emo[0] - 48
            else:
                try:
                    e = int(emo)
                except ValueError:
                    e = -1
                if not 0 <= e < len(FER7):
                    blk_bad.append((ln, f"emotion {shown_value(emo)} is not an integer 0-6"))
                    continue
            if i_use is not None:
                use = fields[i_use].strip().strip(b'"')
                s = USAGE.get(use.decode(errors="replace").lower())
                if s is None:
                    blk_bad.append((ln, f"Usage {shown_value(use)} is not Training, "
                                        "PublicTest or PrivateTest"))
                    continue
                b_use.append(s)
            b_pix.append(fields[i_pix].strip().strip(b'"').strip())
            b_ln.append(ln)
            b_emo.append(e)
        if not b_ln and not blk_bad:
            continue
        ok, imgs = _decode_block(b_pix, b_ln, blk_bad)
        if blk_bad:
            blk_bad.sort()
            if strict:
                line, reason = blk_bad[0]
                more = (f" ({len(blk_bad) - 1} more bad row(s) nearby; load with "
                        "strict=False to skip bad rows)") if len(blk_bad) > 1 else ""
                raise FerError(f"{reason}{more}", where=f"{where}, line {line}")
            bad += blk_bad
        if ok is not None:
            emotions.append(np.asarray(b_emo, dtype=np.int64)[ok])
            if i_use is not None:
                splits.append(np.asarray(b_use, dtype="U5")[ok])
        else:
            emotions.append(np.asarray(b_emo, dtype=np.int64))
            if i_use is not None:
                splits.append(np.asarray(b_use, dtype="U5"))
        images.append(imgs)
        n_use = i_use
    if header is None:
        raise FerError("file is empty; expected a header 'emotion,pixels,Usage' and rows",
                       where=where)
    n = sum(len(i) for i in images)
    if n == 0:
        if bad:
            raise FerError(f"no valid rows (first problem, line {bad[0][0]}: {bad[0][1]})",
                           where=where)
        raise FerError("file has a header but no data rows", where=where)
    labels = np.concatenate(emotions)
    split = np.concatenate(splits) if n_use is not None else _default_split(labels)
    return Dataset(images=np.concatenate(images) if len(images) > 1 else images[0],
                   labels=labels, split=split, label_names=FER7, source=where,
                   label_set="fer7", skipped=[(f"{where}, line {ln}", r) for ln, r in bad])


def _default_split(labels: np.ndarray) -> np.ndarray:
    from fer_core.data.splits import stratified_split
    return stratified_split(labels)


def _decode_block(pix: list[bytes], lns: list[int], bad: list[tuple[int, str]]):
    """Decode the pixel strings of one block into uint8 (k, 48, 48).

    Returns (ok, images): ``ok`` is None when every row decoded, else a boolean mask over
    ``pix`` of the rows kept; reasons for dropped rows are appended to ``bad``.
    """
    n = len(pix)
    ok = np.ones(n, dtype=bool)
    for j, p in enumerate(pix):       # token count via a C string method, no per-value loop
        if p.count(b" ") != N_PIXELS - 1:
            _check_count(p, j, lns, ok, bad)
    blob = b" ".join(pix) if ok.all() else b" ".join([p for p, g in zip(pix, ok) if g])
    if blob.translate(None, _ALLOWED):
        for j, p in enumerate(pix):
            if ok[j] and p.translate(None, _ALLOWED):
                ok[j] = False
                bad.append((lns[j], "pixels contain a non-numeric character; expected "
                                    f"{N_PIXELS} integers 0-255 separated by spaces"))
        blob = b" ".join([p for p, g in zip(pix, ok) if g])
    if _has_long_number(blob):       # a 7+ digit token could wrap around in uint32
        for j, p in enumerate(pix):
            if ok[j] and _has_long_number(p) and max(map(int, p.split())) > 255:
                ok[j] = False
                bad.append((lns[j], "pixel value above 255; expected integers 0-255"))
        blob = b" ".join([p for p, g in zip(pix, ok) if g])
    k = int(ok.sum())
    if k == 0:
        return ok, np.zeros((0, 48, 48), dtype=np.uint8)
    values = np.fromstring(blob, dtype=np.uint32, sep=" ")
    if values.size != k * N_PIXELS:
        # irregular whitespace (double spaces, tabs) fooled the fast count: count each row
        for j, p in enumerate(pix):
            if ok[j]:
                _check_count(p, j, lns, ok, bad)
        return _decode_block_again(pix, lns, ok, bad)
    values = values.reshape(k, N_PIXELS)
    over = values.max(axis=1) > 255
    if over.any():
        kept = np.flatnonzero(ok)
        for j in kept[over].tolist():
            bad.append((lns[j], "pixel value above 255; expected integers 0-255"))
        ok[kept[over]] = False
        values = values[~over]
    images = values.astype(np.uint8).reshape(-1, 48, 48)
    return (None if ok.all() else ok), images


def _decode_block_again(pix, lns, ok, bad):
    keep = [p for p, g in zip(pix, ok) if g]
    if not keep:
        return ok, np.zeros((0, 48, 48), dtype=np.uint8)
    sub_ok, images = _decode_block(keep, [ln for ln, g in zip(lns, ok) if g], bad)
    if sub_ok is not None:
        ok[np.flatnonzero(ok)[~sub_ok]] = False
    return (None if ok.all() else ok), images


def _check_count(p: bytes, j: int, lns, ok, bad) -> None:
    k = len(p.split())
    if k != N_PIXELS:
        ok[j] = False
        bad.append((lns[j], f"has {k} pixel values, expected {N_PIXELS} (48x48)"))


def _has_long_number(blob: bytes) -> bool:
    """True when ``blob`` (digits and whitespace only) may hold a run of 7+ digits.

    Digits 0x30-0x39 have bit 0x10 set, space and tab do not; a run of 7 digits always covers
    one aligned 4-byte word, found by testing that bit on a uint32 view.
    """
    a = np.frombuffer(blob, dtype=np.uint8)
    m = len(a) // 4
    if m == 0:
        return False
    w = a[:4 * m].view(np.uint32)
    return bool(np.any((w & np.uint32(0x10101010)) == np.uint32(0x10101010)))


def to_csv_bytes(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> bytes:
    """Write faces in the FER2013 CSV format (the inverse of ``parse``), vectorised.

    Each value becomes a fixed 4-byte cell (digits, space, NUL padding) by table lookup; the
    NUL bytes are then deleted in C by ``bytes.translate``.
    """
    table = np.zeros((256, 4), dtype=np.uint8)
    for v in range(256):
        cell = f"{v} ".encode()
        table[v, :len(cell)] = np.frombuffer(cell, dtype=np.uint8)
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), N_PIXELS)
    out = [b"emotion,pixels,Usage\n"]
    for s in range(0, len(images), 2000):
        cells = table[images[s:s + 2000]]                     # (k, 2304, 4)
        rows = cells.tobytes().translate(None, b"\0")
        k = len(cells)
        lens = (cells != 0).sum(axis=(1, 2))                  # bytes per row incl. spaces
        ends = np.cumsum(lens)
        begin = 0
        for j in range(k):
            e = int(ends[j])
            out.append(b"%d,%s,%s\n" % (int(labels[s + j]), rows[begin:e - 1],
                                          USAGE_NAMES[str(split[s + j])].encode()))
            begin = e
    return b"".join(out)
