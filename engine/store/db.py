"""SQLAlchemy engines for the store: SQLite in WAL mode or PostgreSQL through psycopg 3.

``durability`` says what a commit must survive:

- ``"process"``: a kill -9 of the engine, or of the PostgreSQL server. SQLite WAL with
  ``synchronous=NORMAL`` (a commit is in the OS page cache, the OS writes it out later).
- ``"power_loss"``: a crash of the machine. SQLite ``synchronous=FULL`` (fsync on every commit).

PostgreSQL runs with ``synchronous_commit=on`` for both: the server flushes its WAL before it
answers COMMIT, so a crash of the server (or of its machine, given ``fsync=on``) loses no commit
that allowed a positive ACK. With ``off`` it answered first and flushed within a few hundred
milliseconds, and an immediate stop of the server lost acknowledged messages.

On SQLite the patient record's tables live in a file of their own beside the store's
(``engine.db`` -> ``engine-record.db``, engine.store.driver.record_attach), which every connection
attaches as schema ``record``, with the same settings: the record's transactions and intake's
commits then take different write locks.

A SQLite file, its ``-wal`` and ``-shm`` (which SQLite creates with the file's permissions) and
the folders the engine creates for it are readable by the engine's user only: messages are
patient data. The WAL is truncated to ``wal_max_bytes`` whenever it starts over
(``journal_size_limit``); the store's writer checkpoints it before it grows past that (checkpoints.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from engine.errors import StoreError
from engine.store.cipher import CLEAR, Cipher, engine_options
from engine.store.defaults import WAL_MAX_BYTES
from engine.store.driver import is_lock_error
from engine.store.driver.record_attach import RECORD_SCHEMA, attach_record, record_file

DURABILITIES = ("process", "power_loss")

_POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
_WAL_RETRY_SECONDS = 0.01
_PRIVATE_FOLDER = 0o700
_PRIVATE_FILE = 0o600


def create_engine_for(
    url: str,
    *,
    durability: str = "process",
    lock_timeout: float = 5.0,
    pool_size: int = 5,
    cipher: Cipher = CLEAR,
    wal_max_bytes: int = WAL_MAX_BYTES,
    autocheckpoint: bool = True,
) -> sa.Engine:
    """An Engine for a ``sqlite:///`` or ``postgresql://`` URL, with the store's durability and locks.

    ``cipher`` seals and opens content at rest (``engine.store.cipher``) for whoever uses the engine.
    ``autocheckpoint=False``: on SQLite no connection checkpoints the WAL as it commits (the
    store's writer thread does, checkpoints.py), so a commit never holds the write lock for that copy.
    """
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}")
    if not lock_timeout > 0:
        raise ValueError(f"lock_timeout must be positive, not {lock_timeout!r}")
    if wal_max_bytes < 1:
        raise ValueError(f"wal_max_bytes must be positive, not {wal_max_bytes!r}")
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return _sqlite_engine(
            parsed, durability, lock_timeout, pool_size, wal_max_bytes, cipher, autocheckpoint
        )
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return _postgresql_engine(
            parsed.set(drivername="postgresql+psycopg"), lock_timeout, pool_size, cipher
        )
    raise StoreError(
        f"unsupported store URL scheme {parsed.drivername!r}: use sqlite:///PATH or postgresql://..."
    )


def sqlite_file(url: sa.Engine | URL) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (or engine); None for any other store or a URI."""
    url = url.url if isinstance(url, sa.Engine) else url
    if url.get_backend_name() != "sqlite" or url.query.get("uri") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _sqlite_engine(
    url: URL,
    durability: str,
    lock_timeout: float,
    pool_size: int,
    wal_max_bytes: int,
    cipher: Cipher,
    autocheckpoint: bool,
) -> sa.Engine:
    if url.database in (None, "", ":memory:"):
        # Every pooled connection would get its own empty database: the writer and readers must share a file.
        raise StoreError("the SQLite store needs a file: sqlite:///PATH")
    record = None
    if (path := sqlite_file(url)) is not None:
        create_private(path)
        record = record_file(path)
        create_private(record)
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        execution_options=engine_options(cipher),
        hide_parameters=True,  # parameters are patient data; keep them out of error messages and logs
        # sqlite3's timeout is the busy handler (PRAGMA busy_timeout), active from the first statement.
        connect_args={"timeout": lock_timeout},
    )
    synchronous = "NORMAL" if durability == "process" else "FULL"

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if record is not None:
                attach_record(cursor, record)
            for schema in ("main", RECORD_SCHEMA) if record is not None else ("main",):
                # Only a new file takes it (before WAL writes its header): pruned content can then be
                # given back to the file system page by page. An older file keeps its mode until a
                # VACUUM (`hl7engine prune --vacuum`). Asked of a file with pages, the pragma would
                # wait for its write lock only to change nothing: a new reader waited for the record.
                if cursor.execute(f"PRAGMA {schema}.page_count").fetchone()[0] == 0:
                    cursor.execute(f"PRAGMA {schema}.auto_vacuum=INCREMENTAL")
                _enable_wal(cursor, schema, lock_timeout)
                cursor.execute(f"PRAGMA {schema}.synchronous={synchronous}")
                cursor.execute(f"PRAGMA {schema}.journal_size_limit={wal_max_bytes}")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A multi-row INSERT inside a transaction keeps a statement journal; on disk that was a
            # temporary file created, written and deleted per transaction (CPU each message).
            cursor.execute("PRAGMA temp_store=MEMORY")
        finally:
            cursor.close()

    return engine


def create_private(path: Path) -> None:
    """Create the missing folders of ``path`` (0700) and the empty database file (0600), never others'.

    SQLite gives its -wal and -shm files the permissions of the database file. The modes are
    given when creating (the umask is the whole process's: no thread may change it), then set
    with chmod, which the umask does not touch; what already exists is left as it is.
    """
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=_PRIVATE_FOLDER)
        except FileExistsError:  # another process of the engine made it meanwhile
            continue
        os.chmod(folder, _PRIVATE_FOLDER)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    except FileExistsError:
        return
    os.close(descriptor)
    os.chmod(path, _PRIVATE_FILE)


def _enable_wal(cursor, schema: str, lock_timeout: float) -> None:
    """Switch the schema's file to WAL, retrying until lock_timeout (converting a new file ignores
    the busy handler)."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            cursor.execute(f"PRAGMA {schema}.journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not is_lock_error(error) or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_RETRY_SECONDS)


def _postgresql_engine(url: URL, lock_timeout: float, pool_size: int, cipher: Cipher) -> sa.Engine:
    # lock_timeout=0 means "wait forever" to PostgreSQL, so never round down to it.
    lock_ms = max(1, round(lock_timeout * 1000))
    # on for every durability: a positive ACK must survive a crash of the server (see the docstring).
    settings = f"-c lock_timeout={lock_ms} -c synchronous_commit=on -c timezone=UTC"
    given = url.query.get("options")
    return sa.create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,  # a restarted server leaves dead connections in the pool
        execution_options=engine_options(cipher),
        hide_parameters=True,  # parameters are patient data; keep them out of error messages and logs
        connect_args={
            "options": f"{given} {settings}" if given else settings,
            "connect_timeout": _POSTGRES_CONNECT_TIMEOUT_SECONDS,
            "application_name": url.query.get("application_name", "hl7engine"),
        },
    )
