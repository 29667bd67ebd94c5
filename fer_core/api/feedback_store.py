"""SQLite feedback store (WAL mode, one connection per thread, busy timeout).

Each row keeps the 48x48 face crop as raw bytes, the true label (canonical emotion name), and what
the model had predicted. :meth:`FeedbackStore.export_csv` writes FER2013-format CSV
(``emotion,pixels,Usage`` with FER2013-7 label indices and ``Usage=Training``), so the feedback can
be loaded by ``fer_core.data.load`` as an extra dataset.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from fer_core.errors import FerError
from fer_core.labels import FER7, _FOLD, canonical

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    REAL    NOT NULL,
    label         TEXT    NOT NULL,
    pixels        BLOB    NOT NULL,
    prediction_id TEXT,
    predicted     TEXT,
    model_id      TEXT,
    note          TEXT
);
"""
_FER7_CANON = [canonical(n) for n in FER7]


def fer7_index(label: str) -> int:
    """FER2013-7 column of a canonical emotion name (contempt folds into disgust)."""
    c = canonical(label)
    c = _FOLD["fer7"].get(c, c)
    return _FER7_CANON.index(c)


class FeedbackStore:
    """Thread-safe: each thread gets its own connection; SQLite serialises writers (WAL)."""

    def __init__(self, path: Path | str, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise FerError(f"cannot open the feedback database ({e})", where=str(self.path),
                           status=503) from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def add(self, pixels: np.ndarray, label: str, *, prediction_id: str | None = None,
            predicted: str | None = None, model_id: str | None = None,
            note: str | None = None) -> int:
        """Store one correction; returns its id. ``pixels`` is a uint8 48x48 face."""
        pixels = np.asarray(pixels)
        if pixels.shape != (48, 48) or pixels.dtype != np.uint8:
            raise FerError(f"expected a uint8 48x48 face, got {pixels.dtype} {pixels.shape}",
                           where="feedback.pixels")
        label = canonical(label)
        fer7_index(label)  # must be exportable
        conn = self._conn()
        cur = conn.execute(
            "INSERT INTO feedback (created_at, label, pixels, prediction_id, predicted, model_id,"
            " note) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), label, pixels.tobytes(), prediction_id, predicted, model_id, note))
        return int(cur.lastrowid)

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def get(self, feedback_id: int) -> dict | None:
        row = self._conn().execute(
            "SELECT id, created_at, label, prediction_id, predicted, model_id, note FROM feedback"
            " WHERE id = ?", (feedback_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "created_at", "label", "prediction_id", "predicted", "model_id", "note")
        return dict(zip(keys, row))

    def iter_csv(self, batch: int = 500):
        """FER2013-format CSV lines (header first), streamed from one read transaction."""
        yield "emotion,pixels,Usage\n"
        # its own connection: the generator may be advanced from different threads
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                               check_same_thread=False)
        try:
            conn.execute("BEGIN")  # one consistent snapshot
            cur = conn.execute("SELECT label, pixels FROM feedback ORDER BY id")
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    break
                out = []
                for label, blob in rows:
                    px = " ".join(map(str, np.frombuffer(blob, dtype=np.uint8).tolist()))
                    out.append(f"{fer7_index(label)},{px},Training\n")
                yield "".join(out)
        finally:
            conn.close()

    def export_csv(self) -> str:
        return "".join(self.iter_csv())

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
