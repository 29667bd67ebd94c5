"""Where the feedback store is: ``FER_FEEDBACK_DB`` (a SQLite file path or a SQLAlchemy URL) as
a SQLAlchemy URL, checked, and described without credentials. Used by the settings (to check
the value once) and by the store (:mod:`fer_core.api.feedback_store`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from fer_core.errors import FerError

WHERE = "FER_FEEDBACK_DB"
KINDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}


def store_url(value: Path | str) -> URL:
    """The SQLAlchemy URL of ``FER_FEEDBACK_DB``: a path means SQLite; ``postgresql://`` and
    ``postgres://`` use psycopg 3. Errors never repeat the value (it may hold a password)."""
    if isinstance(value, Path) or "://" not in str(value):
        return URL.create("sqlite", database=str(Path(value).expanduser()))
    scheme = str(value).split("://", 1)[0].lower()
    try:
        url = make_url(str(value))
        url.port  # noqa: B018 - parsed lazily: a bad port raises here
    except (sa_exc.ArgumentError, ValueError):
        raise FerError(f"not a valid database URL (scheme {scheme!r}); expected a file path or "
                       "postgresql+psycopg://user@host:port/database", where=WHERE) from None
    kind = KINDS.get(url.get_backend_name())
    if kind is None or url.get_driver_name() not in ("psycopg", "postgresql", "pysqlite",
                                                     "sqlite", "postgres"):
        raise FerError(f"unsupported database {scheme!r}; expected a file path (SQLite) or "
                       "postgresql+psycopg://user@host:port/database", where=WHERE)
    if url.port is not None and not 0 < url.port < 65536:
        raise FerError(f"expected a port in 1..65535, got {url.port}", where=WHERE)
    if kind == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def describe_url(url: URL) -> str:
    """Where the store is, without user name or password."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite {url.database}"
    host = url.host or "localhost"
    return f"postgresql {host}{':' + str(url.port) if url.port else ''}/{url.database or ''}"
