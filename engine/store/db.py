"""SQLAlchemy engines for the store: SQLite in WAL mode or PostgreSQL through psycopg 3.

``durability`` says what a commit must survive:

- ``"process"``: a kill -9 of the engine. SQLite WAL with ``synchronous=NORMAL`` (a commit is in
  the OS page cache, the OS writes it out later); PostgreSQL ``synchronous_commit=off`` (the
  server has the commit and flushes it within a few hundred milliseconds).
- ``"power_loss"``: a crash of the machine. SQLite ``synchronous=FULL`` (fsync on every commit);
  PostgreSQL ``synchronous_commit=on`` (the server flushes its WAL before answering).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from engine.errors import StoreError

DURABILITIES = ("process", "power_loss")

# PostgreSQL SQLSTATEs that mean "someone else holds what we need": lock_not_available, deadlock_detected.
_POSTGRES_LOCK_STATES = frozenset({"55P03", "40P01"})
# SQLite primary result codes SQLITE_BUSY and SQLITE_LOCKED.
_SQLITE_LOCK_CODES = frozenset({5, 6})
_POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
_WAL_RETRY_SECONDS = 0.01


def create_engine_for(
    url: str, *, durability: str = "process", lock_timeout: float = 5.0, pool_size: int = 5
) -> sa.Engine:
    """An Engine for a ``sqlite:///`` or ``postgresql://`` URL with the store's durability and lock settings."""
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}")
    if not lock_timeout > 0:
        raise ValueError(f"lock_timeout must be positive, not {lock_timeout!r}")
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return _sqlite_engine(parsed, durability, lock_timeout, pool_size)
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return _postgresql_engine(
            parsed.set(drivername="postgresql+psycopg"), durability, lock_timeout, pool_size
        )
    raise StoreError(
        f"unsupported store URL scheme {parsed.drivername!r}: use sqlite:///PATH or postgresql://..."
    )


def _sqlite_engine(url: URL, durability: str, lock_timeout: float, pool_size: int) -> sa.Engine:
    if url.database in (None, "", ":memory:"):
        # Every pooled connection would get its own empty database: the writer and readers must share a file.
        raise StoreError("the SQLite store needs a file: sqlite:///PATH")
    if not url.query.get("uri"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        hide_parameters=True,  # parameters are patient data; keep them out of error messages and logs
        # sqlite3's timeout is the busy handler (PRAGMA busy_timeout), active from the first statement.
        connect_args={"timeout": lock_timeout},
    )
    synchronous = "NORMAL" if durability == "process" else "FULL"

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            _enable_wal(cursor, lock_timeout)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A multi-row INSERT inside a transaction keeps a statement journal; on disk that was a
            # temporary file created, written and deleted per transaction (~20 us CPU a message).
            cursor.execute("PRAGMA temp_store=MEMORY")
        finally:
            cursor.close()

    return engine


def _enable_wal(cursor, lock_timeout: float) -> None:
    """Switch the file to WAL; converting a new file does not wait on the busy handler, so retry until lock_timeout."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not is_lock_error(error) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_SECONDS)


def _postgresql_engine(url: URL, durability: str, lock_timeout: float, pool_size: int) -> sa.Engine:
    # lock_timeout=0 means "wait forever" to PostgreSQL, so never round down to it.
    lock_ms = max(1, round(lock_timeout * 1000))
    synchronous_commit = "off" if durability == "process" else "on"
    settings = f"-c lock_timeout={lock_ms} -c synchronous_commit={synchronous_commit} -c timezone=UTC"
    given = url.query.get("options")
    return sa.create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,  # a restarted server leaves dead connections in the pool
        hide_parameters=True,  # parameters are patient data; keep them out of error messages and logs
        connect_args={
            "options": f"{given} {settings}" if given else settings,
            "connect_timeout": _POSTGRES_CONNECT_TIMEOUT_SECONDS,
            "application_name": url.query.get("application_name", "hl7engine"),
        },
    )


def is_lock_error(error: BaseException) -> bool:
    """Whether a database error means another transaction held a lock we needed for longer than lock_timeout."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    if getattr(cause, "sqlstate", None) in _POSTGRES_LOCK_STATES:
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SQLITE_LOCK_CODES


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside into StoreError, chained to the cause.

    ``locked`` is set for lock timeouts; ``transient`` also when the database is down or
    unreachable (SQLAlchemy's OperationalError and InterfaceError).
    """
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        # The driver's own message: SQLAlchemy's wraps it with the whole SQL statement.
        reason = error.orig if isinstance(error, sa_exc.StatementError) and error.orig is not None else error
        down = isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError))
        raise StoreError(f"{action} failed: {reason}", locked=is_lock_error(error), transient=down) from error
