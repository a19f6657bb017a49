"""engine.store.driver.connection: statements outside any transaction on SQLite (pragmas, WAL checkpoints)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from engine.store.db import create_engine_for
from engine.store.driver import checkpoint_wal, set_pragmas
from engine.store.driver.connection import TRUNCATE_WAIT_MS
from tests.fakes.driver import items, metadata


def test_pragmas_and_checkpoints_run_on_the_driver(sqlite_url):
    """set_pragmas sets each setting on the connection; checkpoint_wal copies the WAL into the file."""
    engine = create_engine_for(sqlite_url)
    database = Path(sa.engine.make_url(sqlite_url).database)
    metadata.create_all(engine)
    try:
        with engine.connect() as connection:
            set_pragmas(connection, busy_timeout=0, wal_autocheckpoint=0)
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            connection.rollback()
            with connection.begin():
                connection.execute(sa.insert(items), [{"name": "x", "count": n} for n in range(2000)])
            before = database.stat().st_size
            done = checkpoint_wal(connection)
            assert database.stat().st_size > before
            assert done.complete and done.frames > 0
    finally:
        engine.dispose()


def test_a_truncating_checkpoint_empties_the_wal_or_gives_up_soon_on_a_reader(sqlite_url):
    """TRUNCATE leaves a zero-byte WAL; a reader holding a snapshot makes it return False after
    TRUNCATE_WAIT_MS, not the connection's 5 s busy timeout, which is then restored."""
    engine = create_engine_for(sqlite_url, lock_timeout=5.0)
    database = sa.engine.make_url(sqlite_url).database
    wal = Path(database + "-wal")
    metadata.create_all(engine)
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        with engine.connect() as connection:
            with connection.begin():
                connection.execute(sa.insert(items), [{"name": "x", "count": n} for n in range(500)])
            assert wal.stat().st_size > 0
            assert checkpoint_wal(connection, truncate=True).complete
            assert wal.stat().st_size == 0
            reader.execute("BEGIN")
            reader.execute(f"SELECT count(*) FROM {items.name}").fetchone()  # a snapshot, held until COMMIT
            with connection.begin():
                connection.execute(sa.insert(items), [{"name": "z", "count": 2}])
            started = time.monotonic()
            assert not checkpoint_wal(connection, truncate=True).complete
            waited = time.monotonic() - started
            reader.execute("COMMIT")
            assert TRUNCATE_WAIT_MS / 1000 * 0.9 <= waited < 2.0
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        reader.close()
        engine.dispose()
