"""engine.store.driver.connection: statements outside any transaction on SQLite (pragmas, WAL checkpoints)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from engine.store.db import create_engine_for
from engine.store.driver import checkpoint_wal, set_pragmas
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
            checkpoint_wal(connection)
            assert database.stat().st_size > before
    finally:
        engine.dispose()
