"""FER+ vote files (``fer2013new.csv``) joined by row order with the matching FER2013 CSV.

Columns: ``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,
unknown,NF``; row i of the vote file describes the face in row i of FER2013. Labels use the
FER+-8 set. ``mode="majority"``: the most-voted emotion; rows whose top vote is unknown/NF or
that have no votes are dropped (listed in ``skipped``). ``mode="votes"``: the same rows, with
``soft_labels`` = normalised emotion votes (float32 N x 8) and labels = their argmax.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fer_core.data import fer2013 as _fer2013
from fer_core.data.dataset import Dataset
from fer_core.errors import FerError
from fer_core.labels import FERPLUS8

VOTE_COLUMNS = FERPLUS8 + ("unknown", "nf")
MODES = ("majority", "votes")


def read_votes(path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """(votes float32 (N, 10) in VOTE_COLUMNS order, Usage per row, file line per row)."""
    text = _fer2013.read_bytes(path).decode("utf-8", "replace").lstrip("\ufeff")
    if not text.strip():
        raise FerError("file is empty; expected a FER+ header "
                       "'Usage,Image name,neutral,...,unknown,NF'", where=str(path))
    rows = list(csv.reader(io.StringIO(text)))
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in VOTE_COLUMNS if c not in header]
    if missing:
        raise FerError(f"missing column(s) {missing}; expected "
                       "'Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,"
                       "fear,contempt,unknown,NF'", where=str(path))
    idx = [header.index(c) for c in VOTE_COLUMNS]
    i_use = header.index("usage") if "usage" in header else None
    votes, usage, lines = [], [], []
    for ln, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise FerError(f"has {len(row)} fields, expected {len(header)}",
                           where=f"{path}, line {ln}")
        try:
            v = [float(row[i]) for i in idx]
        except ValueError:
            raise FerError("vote counts must be numbers", where=f"{path}, line {ln}") from None
        if min(v) < 0:
            raise FerError("vote counts must not be negative", where=f"{path}, line {ln}")
        votes.append(v)
        usage.append(row[i_use].strip() if i_use is not None else "")
        lines.append(ln)
    if not votes:
        raise FerError("file has a header but no data rows", where=str(path))
    return np.asarray(votes, dtype=np.float32), usage, lines


def load(path: Path, strict: bool = True, fer2013=None, mode: str = "majority") -> Dataset:
    path = Path(path)
    if mode not in MODES:
        raise FerError(f"unknown FER+ mode {mode!r}; expected one of {MODES}", where="mode")
    if fer2013 is None:
        raise FerError("a FER+ vote file needs the matching FER2013 CSV: pass fer2013=PATH",
                       where=str(path))
    fer_path = Path(fer2013).expanduser()
    if not fer_path.exists():
        raise FerError("FER2013 CSV for the FER+ votes not found", where=str(fer_path))
    votes, usage, lines = read_votes(path)
    # row order matters: the FER2013 file must be read strictly (no skipped rows)
    base = _fer2013.load(fer_path, strict=True)
    if len(base) != len(votes):
        raise FerError(f"FER+ vote file has {len(votes)} rows but the FER2013 CSV "
                       f"{fer_path} has {len(base)}; they must match row by row",
                       where=str(path))
    emo = votes[:, :8]
    total = votes.sum(axis=1)
    top = votes.argmax(axis=1)
    drop_unknown = top >= 8
    drop_empty = total <= 0
    keep = ~(drop_unknown | drop_empty)
    skipped = []
    for i in np.flatnonzero(~keep).tolist():
        reason = ("no votes" if drop_empty[i] else
                  f"most votes are {VOTE_COLUMNS[top[i]]!r}, not an emotion")
        skipped.append((f"{path}, line {lines[i]}", reason))
    if not keep.any():
        raise FerError("no row has an emotion majority", where=str(path))
    emo = emo[keep]
    labels = emo.argmax(axis=1).astype(np.int64)
    soft = None
    if mode == "votes":
        s = emo.sum(axis=1, keepdims=True)
        soft = (emo / np.where(s > 0, s, 1)).astype(np.float32)
    split = base.split[keep]
    return Dataset(images=base.images[keep], labels=labels, split=split,
                   label_names=FERPLUS8, source=f"{path} + {fer_path}", label_set="ferplus8",
                   soft_labels=soft, skipped=skipped)
