"""Atomic file writes: write a temp file in the destination folder, then ``os.replace``.

A reader never sees half a file and a crash never leaves one behind. Used for models, runs,
datasets, caches and exports alike. No heavy imports (``fer_core.data`` uses it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from fer_core.errors import FerError


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp", mode: int = 0o644):
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is
    removed. For writers that want a file name (``model.save``, ``np.savez``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_default(o, fallback=None):
    """``json.dumps(default=...)`` for the project's files: numpy scalars and arrays, sets and
    tuples, paths; anything else goes to ``fallback`` (TypeError when there is none)."""
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if fallback is not None:
        return fallback(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path, default):
    """The JSON in ``path``, ``default`` when the file does not exist; a file that is not JSON
    raises :class:`FerError` naming it."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FerError(f"corrupt JSON ({e})", where=str(path)) from None
