"""Feedback store on SQLAlchemy Core: SQLite (WAL, the embedded default) or PostgreSQL (psycopg 3).

``FER_FEEDBACK_DB`` is a file path (SQLite) or a SQLAlchemy URL such as
``postgresql+psycopg://user@host:5432/db``. Several processes may write to one database: ids,
counts and ordering always come from the database, never from process memory.

Each row keeps the 48x48 face crop as raw bytes, the true label (canonical emotion name), and what
the model had predicted. :meth:`FeedbackStore.export_csv` writes FER2013-format CSV
(``emotion,pixels,Usage`` with FER2013-7 label indices and ``Usage=Training``), so the feedback can
be loaded by ``fer_core.data.load`` as an extra dataset.

The schema is created, or upgraded, when the store is first reached (under a lock, so that
processes starting together agree). A database that cannot be reached makes every call raise a 503
:class:`FerError` naming the store without credentials; the next call tries again, so writes
resume when the database is back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fer_core.errors import FerError
from fer_core.labels import FER7, _FOLD, canonical
from fer_core.store_url import KINDS, WHERE, describe_url, store_url

log = logging.getLogger("fer_core.api.feedback")

SCHEMA_VERSION = 4
RETRY_AFTER_S = 1.0          # after a failed connection, calls fail fast for this long
_PG_LOCK_KEY = 0x46455231    # advisory lock id for schema changes ("FER1")

metadata = sa.MetaData()
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("pixels", sa.LargeBinary, nullable=False),
    sa.Column("prediction_id", sa.Text),
    sa.Column("predicted", sa.Text),
    sa.Column("model_id", sa.Text),
    sa.Column("note", sa.Text),
    sqlite_autoincrement=True,   # ids are never reused, as in earlier versions of the file
)
schema_table = sa.Table("fer_schema", metadata, sa.Column("version", sa.Integer, nullable=False))

# The model lifecycle (schema 2): promoted model files themselves (so every instance, on any
# host, can load them), the one active-model pointer, and the history of promotions/rollbacks.
model_files = sa.Table(
    "fer_models", metadata,
    sa.Column("model_id", sa.Text, primary_key=True),     # "<name>-<sha256[:12]>"
    sa.Column("sha256", sa.Text, nullable=False),          # of the .keras bytes
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("run", sa.Text),                             # where it was promoted from
    sa.Column("labels", sa.Text, nullable=False),          # labels.json content
    sa.Column("calibration", sa.Text),                     # calibration.json content, or NULL
    sa.Column("blob", sa.LargeBinary, nullable=False),     # the .keras file
    sa.Column("created_at", sa.Float, nullable=False),
)
active_model = sa.Table(
    "fer_active_model", metadata,
    sa.Column("id", sa.Integer, primary_key=True),         # always 1: one pointer
    sa.Column("model_id", sa.Text),                        # NULL: each instance's own FER_MODEL
    sa.Column("version", sa.Integer, nullable=False),      # +1 on every change
    sa.Column("updated_at", sa.Float, nullable=False),
)
model_history = sa.Table(
    "fer_model_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("action", sa.Text, nullable=False),          # "promote" | "rollback"
    sa.Column("model_id", sa.Text),                        # active after it (NULL: FER_MODEL)
    sa.Column("previous_model_id", sa.Text),               # active before it
    sa.Column("who", sa.Text, nullable=False),
    sa.Column("run", sa.Text),
    sa.Column("comparison", sa.Text),                      # comparison.json content, or NULL
    sa.Column("warning", sa.Text),
    sqlite_autoincrement=True,
)
# Schema 3: beside each promoted .keras, the flatbuffer it runs on (LiteRT) and how it was made
# (the model.tflite.json record), so an instance of the runtime install, without TensorFlow,
# serves a promoted model too. Models promoted before schema 3 have no row here.
model_runtime = sa.Table(
    "fer_model_runtime", metadata,
    sa.Column("model_id", sa.Text, primary_key=True),     # fer_models.model_id
    sa.Column("record", sa.Text, nullable=False),          # model.tflite.json content
    sa.Column("blob", sa.LargeBinary, nullable=False),     # model.tflite
)

# Schema 4: the number of feedback rows, kept by the database itself (a trigger on every insert,
# whichever program or version inserts), so that a write that reports the total ("stored")
# reads one row instead of counting the table (150 ms at 100,000 rows on SQLite, growing).
feedback_count = sa.Table(
    "fer_feedback_count", metadata,
    sa.Column("id", sa.Integer, primary_key=True),         # always 1: one counter
    sa.Column("n", sa.Integer, nullable=False),
)
# version -> tables it adds (upgrades run in order, each in the start-up transaction)
MIGRATIONS = {1: [feedback], 2: [model_files, active_model, model_history], 3: [model_runtime],
              4: [feedback_count]}

_COUNT_TRIGGER = {
    "sqlite": ["CREATE TRIGGER IF NOT EXISTS fer_feedback_counted AFTER INSERT ON feedback "
               "BEGIN UPDATE fer_feedback_count SET n = n + 1 WHERE id = 1; END"],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION fer_feedback_counted() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN UPDATE fer_feedback_count SET n = n + 1 WHERE id = 1; RETURN NULL; END $$",
        "CREATE TRIGGER fer_feedback_counted AFTER INSERT ON feedback "
        "FOR EACH ROW EXECUTE FUNCTION fer_feedback_counted()"],
}


def _seed_feedback_count(conn) -> None:
    """Schema 4: the counter starts at the rows already stored (counted once, with inserts held
    off until the trigger is in place), then the trigger keeps it."""
    kind = conn.dialect.name  # "sqlite" or "postgresql"
    if kind == "postgresql":  # an instance of an older version may be writing right now
        conn.execute(sa.text("LOCK TABLE feedback IN SHARE ROW EXCLUSIVE MODE"))
    n = conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one()
    conn.execute(feedback_count.insert().values(id=1, n=int(n)))
    for statement in _COUNT_TRIGGER[kind]:
        conn.execute(sa.text(statement))


# version -> data step run after its tables are created
MIGRATION_STEPS = {4: _seed_feedback_count}
_COUNT = sa.select(feedback_count.c.n).where(feedback_count.c.id == 1)

_FER7_CANON = [canonical(n) for n in FER7]


def fer7_index(label: str) -> int:
    """FER2013-7 column of a canonical emotion name (contempt folds into disgust)."""
    c = canonical(label)
    c = _FOLD["fer7"].get(c, c)
    return _FER7_CANON.index(c)


def check_location(value: Path | str) -> None:
    """Start-up check of a SQLite location: its folder exists or can be created (FerError, naming
    the folder, otherwise). Server URLs are not contacted here: a server that is down only
    disables feedback until it is back."""
    url = store_url(value)
    if url.get_backend_name() != "sqlite":
        return
    folder = Path(url.database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FerError(f"cannot create the folder of the feedback database {folder} "
                       f"({e.strerror or type(e).__name__})", where=WHERE) from None


def check_store(value: Path | str) -> None:
    """Start-up check: a SQLite file is opened now, so a location that cannot be opened as a
    database (a folder, a file that is not SQLite) is a configuration error (FerError, exit 2),
    not a 503 later. A server URL is only parsed: a server that is down disables feedback (503)
    until it is back."""
    import sqlite3
    url = store_url(value)
    if url.get_backend_name() != "sqlite":
        return
    check_location(value)
    try:
        conn = sqlite3.connect(url.database, timeout=10)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise FerError(f"cannot open the feedback database {url.database} as SQLite ({e})",
                       where=WHERE) from None


class FeedbackStore:
    """Thread-safe and multi-process safe store of feedback rows (a SQLAlchemy engine pool)."""

    def __init__(self, location: Path | str, busy_timeout_ms: int = 10_000,
                 connect_timeout_s: int = 5):
        self.url = store_url(location)
        self.kind = KINDS[self.url.get_backend_name()]
        self.where = describe_url(self.url)
        self._ready = False
        self._failed_at = 0.0
        self._lock = threading.Lock()
        if self.kind == "sqlite":
            check_location(location)
            self.path = Path(self.url.database)
            self.engine = sa.create_engine(
                self.url, connect_args={"timeout": busy_timeout_ms / 1000,
                                        "check_same_thread": False})
            sa.event.listen(self.engine, "connect", self._sqlite_pragmas(busy_timeout_ms))
            sa.event.listen(self.engine, "begin", self._sqlite_begin)
        else:
            self.path = None
            args = {} if "connect_timeout" in self.url.query else \
                {"connect_timeout": connect_timeout_s}
            self.engine = sa.create_engine(self.url, connect_args=args, pool_pre_ping=True,
                                           hide_parameters=True)
        self._ensure()  # a down server is not fatal here (the next call tries again)

    @staticmethod
    def _sqlite_pragmas(busy_timeout_ms: int):
        def on_connect(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin
        return on_connect

    @staticmethod
    def _sqlite_begin(conn) -> None:
        """Explicit BEGIN (the sqlite3 module would defer it to the first write); IMMEDIATE
        (take the write lock now, waiting for it) when asked with ``immediate=True``."""
        immediate = conn.get_execution_options().get("immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    # ---- errors and the schema -------------------------------------------------------------
    def _unavailable(self, e: Exception) -> FerError:
        self._failed_at = time.monotonic()
        reason = type(getattr(e, "orig", None) or e).__name__
        log.warning("feedback database %s unreachable (%s)", self.where, reason)
        return FerError(f"feedback database unavailable ({self.where}: {reason}); "
                        "try again later", where=WHERE, status=503)

    def _ensure(self, raise_errors: bool = False) -> bool:
        """Create or upgrade the schema once; False (or a 503 FerError) when unreachable."""
        if self._ready:
            return True
        with self._lock:
            if self._ready:
                return True
            try:
                self._fail_fast()
            except FerError:
                if raise_errors:
                    raise
                return False
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(immediate=True)
                    with conn.begin():
                        self._migrate(conn)
            except sa_exc.SQLAlchemyError as e:
                err = self._unavailable(e)
                if raise_errors:
                    raise err from None
                return False
            self._ready, self._failed_at = True, 0.0
            return True

    def _migrate(self, conn) -> None:
        if self.kind == "postgresql":  # one process at a time changes the schema
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        schema_table.create(conn, checkfirst=True)
        row = conn.execute(sa.select(schema_table.c.version)).first()
        current = 0 if row is None else int(row[0])
        if current == 0 and sa.inspect(conn).has_table("feedback"):
            current = 1  # a file written before the schema was versioned
        if current > SCHEMA_VERSION:
            raise FerError(f"the feedback database has schema version {current}, newer than "
                           f"this FER Studio understands ({SCHEMA_VERSION}); upgrade FER Studio",
                           where=WHERE, status=503)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for table in MIGRATIONS[version]:
                table.create(conn, checkfirst=True)
            if version in MIGRATION_STEPS:
                MIGRATION_STEPS[version](conn)
            log.info("feedback database %s: schema version %d", self.where, version)
        if row is None:
            conn.execute(schema_table.insert().values(version=SCHEMA_VERSION))
        elif current != SCHEMA_VERSION or int(row[0]) != SCHEMA_VERSION:
            conn.execute(schema_table.update().values(version=SCHEMA_VERSION))

    def _fail_fast(self) -> None:
        """Right after a failed connection, answer 503 at once instead of waiting for a timeout
        in every request (a host that drops packets would otherwise hold a thread each)."""
        if self._failed_at and time.monotonic() - self._failed_at < RETRY_AFTER_S:
            raise FerError(f"feedback database unavailable ({self.where}); try again later",
                           where=WHERE, status=503)

    def _run(self, fn, immediate: bool = False):
        """``fn(connection)`` in one transaction; unreachable database -> 503 FerError.
        ``immediate``: SQLite takes the write lock up front (read-then-write transactions)."""
        self._ensure(raise_errors=True)
        self._fail_fast()
        try:
            with self.engine.connect() as conn:
                if immediate:
                    conn.execution_options(immediate=True)
                with conn.begin():
                    out = fn(conn)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as e:
            raise self._unavailable(e) from None
        except sa_exc.DBAPIError as e:
            if e.connection_invalidated:
                raise self._unavailable(e) from None
            raise
        self._failed_at = 0.0
        return out

    # ---- API -------------------------------------------------------------------------------
    def ping(self) -> bool:
        """Whether the database answers now (health)."""
        try:
            if not self._ensure():
                return False
            self._fail_fast()
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except FerError:
            return False
        except sa_exc.SQLAlchemyError as e:
            self._unavailable(e)
            return False
        self._failed_at = 0.0
        return True

    def schema_version(self) -> int:
        return int(self._run(lambda c: c.execute(sa.select(schema_table.c.version)).scalar_one()))

    def add(self, pixels: np.ndarray, label: str, *, prediction_id: str | None = None,
            predicted: str | None = None, model_id: str | None = None,
            note: str | None = None) -> int:
        """Store one correction (committed when this returns); returns its id from the database.
        ``pixels`` is a uint8 48x48 face."""
        return self.add_and_count(pixels, label, prediction_id=prediction_id,
                                  predicted=predicted, model_id=model_id, note=note)[0]

    def add_and_count(self, pixels: np.ndarray, label: str, **kw) -> tuple[int, int]:
        """:meth:`add`, and the number of stored rows once it is in (one transaction: the
        insert's trigger moves the counter, whose row concurrent writers then wait for)."""
        stmt = self._insert(pixels, label, **kw)

        def both(c):
            fid = c.execute(stmt).scalar_one()
            return int(fid), int(c.execute(_COUNT).scalar_one())
        return self._run(both)

    @staticmethod
    def _insert(pixels, label, *, prediction_id=None, predicted=None, model_id=None, note=None):
        pixels = np.asarray(pixels)
        if pixels.shape != (48, 48) or pixels.dtype != np.uint8:
            raise FerError(f"expected a uint8 48x48 face, got {pixels.dtype} {pixels.shape}",
                           where="feedback.pixels")
        label = canonical(label)
        fer7_index(label)  # must be exportable
        return feedback.insert().values(
            created_at=time.time(), label=label, pixels=pixels.tobytes(),
            prediction_id=prediction_id, predicted=predicted, model_id=model_id, note=note,
        ).returning(feedback.c.id)

    def count(self) -> int:
        """How many feedback rows are stored (the counter the insert trigger keeps)."""
        return int(self._run(lambda c: c.execute(_COUNT).scalar_one()))

    def get(self, feedback_id: int) -> dict | None:
        cols = [feedback.c[k] for k in ("id", "created_at", "label", "prediction_id",
                                        "predicted", "model_id", "note")]
        row = self._run(lambda c: c.execute(
            sa.select(*cols).where(feedback.c.id == feedback_id)).first())
        return None if row is None else dict(row._mapping)

    def iter_csv(self, batch: int = 500):
        """FER2013-format CSV lines (header first) in id order, streamed from one query.

        Connects and runs the query now (so an unreachable database raises here, before any line
        is sent), then returns the generator of lines; rows are fetched ``batch`` at a time.
        """
        self._ensure(raise_errors=True)
        self._fail_fast()
        try:
            conn = self.engine.connect()
        except sa_exc.SQLAlchemyError as e:
            raise self._unavailable(e) from None
        try:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                sa.select(feedback.c.label, feedback.c.pixels).order_by(feedback.c.id))
        except sa_exc.SQLAlchemyError as e:
            conn.close()
            raise self._unavailable(e) from None
        return self._lines(conn, result, batch)

    @staticmethod
    def _lines(conn, result, batch):
        try:
            yield "emotion,pixels,Usage\n"
            for rows in result.partitions(batch):
                out = []
                for label, blob in rows:
                    px = " ".join(map(str, np.frombuffer(blob, dtype=np.uint8).tolist()))
                    out.append(f"{fer7_index(label)},{px},Training\n")
                yield "".join(out)
        finally:
            conn.close()

    def export_csv(self) -> str:
        return "".join(self.iter_csv())

    def feedback_rows(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Every feedback row: uint8 faces (N, 48, 48), canonical labels, ids (id order)."""
        rows = self._run(lambda c: c.execute(
            sa.select(feedback.c.id, feedback.c.label, feedback.c.pixels)
            .order_by(feedback.c.id)).all())
        faces = np.stack([np.frombuffer(r[2], dtype=np.uint8).reshape(48, 48) for r in rows]) \
            if rows else np.zeros((0, 48, 48), dtype=np.uint8)
        return faces, [r[1] for r in rows], np.asarray([r[0] for r in rows], dtype=np.int64)

    # ---- the model lifecycle (fer_core.promotion) ------------------------------------------
    def active(self) -> dict:
        """``{"model_id": str | None, "version": int, "updated_at"}`` (cheap: polled)."""
        row = self._run(lambda c: c.execute(
            sa.select(active_model.c.model_id, active_model.c.version,
                      active_model.c.updated_at).where(active_model.c.id == 1)).first())
        if row is None:
            return {"model_id": None, "version": 0, "updated_at": None}
        return dict(row._mapping)

    def model_record(self, model_id: str, with_blob: bool = False) -> dict | None:
        """The promoted model ``model_id``; ``with_blob``: with its .keras bytes (``blob``) and
        its runtime flatbuffer with its record (``runtime_blob``, ``runtime_record``; None for
        a model promoted before schema 3)."""
        cols = [model_files.c[k] for k in ("model_id", "sha256", "name", "run", "labels",
                                           "calibration", "created_at")]
        query = sa.select(*cols)
        if with_blob:
            query = sa.select(*cols, model_files.c.blob,
                              model_runtime.c.blob.label("runtime_blob"),
                              model_runtime.c.record.label("runtime_record")).outerjoin(
                model_runtime, model_runtime.c.model_id == model_files.c.model_id)
        row = self._run(lambda c: c.execute(
            query.where(model_files.c.model_id == model_id)).first())
        return None if row is None else dict(row._mapping)

    def history(self, limit: int = 100) -> list[dict]:
        """Promotions and rollbacks, newest first."""
        rows = self._run(lambda c: c.execute(
            sa.select(model_history).order_by(model_history.c.id.desc()).limit(limit)).all())
        return [dict(r._mapping) for r in rows]

    def set_active(self, *, action: str, model_id: str | None, who: str,
                   expect_version: int | None = None, record: dict | None = None,
                   run: str | None = None, comparison: str | None = None,
                   warning: str | None = None) -> dict:
        """Store the model (``record`` with its blob and, under ``runtime``, its flatbuffer's
        ``{"record", "blob"}``; once per id), move the pointer and write
        the history row, all in ONE transaction: an error leaves everything as it was.
        ``expect_version``: refuse (409) if someone else changed the pointer meanwhile."""
        now = time.time()

        def tx(c):
            if self.kind == "postgresql":  # one change of the pointer at a time
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY + 1})
            cur = c.execute(sa.select(active_model.c.model_id, active_model.c.version)
                            .where(active_model.c.id == 1)).first()
            prev, version = (None, 0) if cur is None else (cur[0], int(cur[1]))
            if expect_version is not None and version != expect_version:
                raise FerError("the active model changed meanwhile (another promotion or "
                               "rollback); look at the history and try again", where=WHERE,
                               status=409)
            if record is not None and c.execute(sa.select(model_files.c.model_id).where(
                    model_files.c.model_id == record["model_id"])).first() is None:
                files = {k: v for k, v in record.items() if k != "runtime"}
                c.execute(model_files.insert().values(**files, created_at=now))
                if record.get("runtime") is not None:
                    c.execute(model_runtime.insert().values(model_id=record["model_id"],
                                                            **record["runtime"]))
            if cur is None:
                c.execute(active_model.insert().values(id=1, model_id=model_id, version=1,
                                                       updated_at=now))
            else:
                c.execute(active_model.update().where(active_model.c.id == 1).values(
                    model_id=model_id, version=version + 1, updated_at=now))
            c.execute(model_history.insert().values(
                at=now, action=action, model_id=model_id, previous_model_id=prev, who=who,
                run=run, comparison=comparison, warning=warning))
            return {"model_id": model_id, "previous_model_id": prev, "version": version + 1,
                    "at": now}
        return self._run(tx, immediate=True)

    def close(self) -> None:
        self.engine.dispose()
