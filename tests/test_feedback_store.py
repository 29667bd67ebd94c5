"""Feedback store set-up: FER_FEEDBACK_DB as a path or a SQLAlchemy URL, start-up errors, schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from fer_core.api.settings import Settings
from fer_core.errors import FerError
from tests.factories import ROOT, free_port


def test_serve_with_a_feedback_folder_that_cannot_be_created_exits_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    env = {**os.environ, "FER_FEEDBACK_DB": str(blocker / "sub" / "fb.sqlite3")}
    r = subprocess.run([sys.executable, "-m", "fer_core", "serve", "--port", str(free_port()),
                        "--model", str(tmp_path / "no-model")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "FER_FEEDBACK_DB" in lines[0] and "a-file" in lines[0], r.stderr


def test_feedback_db_accepts_a_path_or_a_url(tmp_path):
    from fer_core.store_url import store_url
    s = Settings.from_env({"FER_FEEDBACK_DB": str(tmp_path / "x.db")})
    assert store_url(s.feedback_db).drivername == "sqlite"
    s = Settings.from_env({"FER_FEEDBACK_DB": "postgresql+psycopg://u:pw@127.0.0.1:5/fer"})
    url = store_url(s.feedback_db)
    assert url.drivername == "postgresql+psycopg" and url.database == "fer"
    assert store_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert "pw" not in repr(s)
    with pytest.raises(FerError, match="FER_FEEDBACK_DB") as e:
        Settings.from_env({"FER_FEEDBACK_DB": "mysql://u:topsecret@h/db"})
    assert "topsecret" not in str(e.value)
    with pytest.raises(FerError, match="FER_FEEDBACK_DB") as e:
        Settings.from_env({"FER_FEEDBACK_DB": "postgresql+psycopg://u:topsecret@h:notaport/db"})
    assert "topsecret" not in str(e.value)


def test_postgres_url_is_not_taken_as_a_file_path(tmp_path, monkeypatch):
    """A PostgreSQL URL never creates a folder; an unreachable server is a clear 503, no secret."""
    from fer_core.api.feedback_store import FeedbackStore
    monkeypatch.chdir(tmp_path)
    store = FeedbackStore(f"postgresql+psycopg://fer:topsecret@127.0.0.1:{free_port()}/fer")
    assert store.kind == "postgresql" and store.ping() is False
    with pytest.raises(FerError) as e:
        store.add(np.zeros((48, 48), np.uint8), "happy")
    assert e.value.status == 503 and "topsecret" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    store.close()


def test_legacy_sqlite_file_is_adopted_and_newer_schema_refused(tmp_path):
    from fer_core.api.feedback_store import SCHEMA_VERSION, FeedbackStore
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)  # the table as earlier versions created it
    con.executescript("""CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, label TEXT NOT NULL,
        pixels BLOB NOT NULL, prediction_id TEXT, predicted TEXT, model_id TEXT, note TEXT);""")
    con.execute("INSERT INTO feedback (created_at, label, pixels) VALUES (1.0, 'sad', ?)",
                (bytes(48 * 48),))
    con.commit()
    con.close()
    store = FeedbackStore(path)
    assert store.count() == 1 and store.schema_version() == SCHEMA_VERSION
    assert store.add(np.full((48, 48), 7, np.uint8), "happy") == 2
    assert store.count() == 2  # the counter (schema 4) started at the adopted file's one row
    assert store.export_csv().splitlines()[1:] == [
        "4," + " ".join(["0"] * 2304) + ",Training", "3," + " ".join(["7"] * 2304) + ",Training"]
    con = sqlite3.connect(path)  # a writer that knows nothing of the counter (an older version)
    con.execute("INSERT INTO feedback (created_at, label, pixels) VALUES (2.0, 'sad', ?)",
                (bytes(48 * 48),))
    con.commit()
    con.close()
    assert store.count() == 3  # the database's trigger counted it
    store.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute("UPDATE fer_schema SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(FerError, match="newer"):
        FeedbackStore(path).count()
