"""On-disk cache of parsed datasets, keyed by the source's path, size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fer_core import atomic
from fer_core.data.dataset import Dataset

VERSION = 3  # bump when parsing changes


def cache_dir() -> Path:
    from fer_core.settings import get_settings
    return get_settings().cache_dir


def key_for(path: Path, **options) -> str:
    """Key from the file or folder's identity and content stamp (size + mtime, recursively)."""
    path = path.resolve()
    stamps = []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        stamps.append((str(p), st.st_size, st.st_mtime_ns))
    for value in options.values():        # e.g. FER+ fer2013=PATH: its changes count too
        if isinstance(value, str) and value and os.path.isfile(value):
            st = os.stat(value)
            stamps.append((os.path.abspath(value), st.st_size, st.st_mtime_ns))
    blob = json.dumps([VERSION, str(path), stamps, sorted(options.items())]).encode()
    return hashlib.sha1(blob).hexdigest()


def get(key: str) -> Dataset | None:
    f = cache_dir() / f"{key}.npz"
    if not f.exists():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            soft = z["soft_labels"] if "soft_labels" in z.files else None
            return Dataset(images=z["images"], labels=z["labels"], split=z["split"],
                           soft_labels=soft, **meta)
    except Exception:  # a damaged cache entry is rebuilt, never trusted
        return None


def put(key: str, ds: Dataset) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(ds).items()
                if k not in ("images", "labels", "split", "soft_labels")}
        arrays = {"images": ds.images, "labels": ds.labels, "split": ds.split,
                  "meta": np.asarray(json.dumps(meta))}
        if ds.soft_labels is not None:
            arrays["soft_labels"] = ds.soft_labels
        with atomic.atomic_path(d / f"{key}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass  # caching is an optimisation; a read-only home must not break loading
