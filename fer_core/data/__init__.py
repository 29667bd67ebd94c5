"""Data layer: load FER datasets from any supported source into a :class:`Dataset`.

``import fer_core.data`` never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.data import cache as _cache
from fer_core.data.dataset import SPLITS, Dataset
from fer_core.errors import FerError

__all__ = ["Dataset", "SPLITS", "load", "FerError"]


def load(source, cache: bool = True, strict: bool = True, **options) -> Dataset:
    """Load ``source``: "demo", a FER2013 CSV (.csv/.csv.gz/.zip), a FER+ vote CSV (needs
    ``fer2013=`` the matching FER2013 CSV, ``mode="majority"|"votes"``), or an image folder.

    Bad input raises :class:`FerError` naming the file and row; ``strict=False`` skips bad rows
    and lists them in ``Dataset.skipped``.
    """
    if isinstance(source, str) and source == "demo":
        from fer_core.data import demo
        source = demo.ensure_demo()
        ds = load(source, cache=cache, strict=strict)
        ds.synthetic = True
        ds.source = "synthetic demo"
        return ds
    path = Path(os.path.expanduser(str(source)))
    if not path.exists():
        raise FerError("no such file or folder", where=str(path))
    key = None
    if cache:
        key = _cache.key_for(path, strict=strict,
                             **{k: str(v) for k, v in options.items()})
        hit = _cache.get(key)
        if hit is not None:
            return hit
    ds = _load_uncached(path, strict=strict, **options)
    if key is not None:
        _cache.put(key, ds)
    return ds


def _load_uncached(path: Path, strict: bool, **options) -> Dataset:
    if path.is_dir():
        from fer_core.data import folders
        return folders.load(path, strict=strict, **options)
    from fer_core.data import fer2013
    cols = fer2013.read_header(path)
    if "pixels" not in cols and "neutral" in cols and "contempt" in cols:
        from fer_core.data import ferplus
        return ferplus.load(path, strict=strict, **options)
    if options:
        raise FerError(f"unexpected option(s) {sorted(options)} for a FER2013 CSV",
                       where=str(path))
    return fer2013.load(path, strict=strict)
