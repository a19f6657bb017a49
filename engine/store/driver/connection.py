"""Statements outside any transaction on the driver's own connection: settings, WAL checkpoints."""

from __future__ import annotations

import sqlalchemy as sa


def set_pragmas(connection: sa.Connection, **settings: object) -> None:
    """SQLite: set each ``PRAGMA name=value`` on the connection, in order, outside any transaction."""
    cursor = connection.connection.driver_connection.cursor()
    for name, value in settings.items():
        cursor.execute(f"PRAGMA {name}={value}")
    cursor.close()


# How long a TRUNCATE checkpoint waits for readers, instead of the connection's whole busy timeout:
# the store's writes wait behind it, and a reader that holds on longer is tried again later.
TRUNCATE_WAIT_MS = 200


def checkpoint_wal(connection: sa.Connection, *, truncate: bool = False) -> bool:
    """SQLite: copy the WAL into the database file; whether all of it was (readers may hold some back).

    PASSIVE waits for no one. ``truncate``: wait (TRUNCATE_WAIT_MS at most) for the writers and
    readers, copy everything and truncate the WAL file to zero bytes (TRUNCATE).
    On the driver: a checkpoint is no transaction, and SQLAlchemy would begin (and commit) one.
    """
    driver = connection.connection.driver_connection
    if not truncate:
        return _checkpoint(driver, "PASSIVE")
    waited = driver.execute("PRAGMA busy_timeout").fetchone()[0]
    driver.execute(f"PRAGMA busy_timeout={min(waited, TRUNCATE_WAIT_MS)}").close()
    try:
        return _checkpoint(driver, "TRUNCATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout={waited}").close()


def _checkpoint(driver, mode: str) -> bool:
    cursor = driver.execute(f"PRAGMA wal_checkpoint({mode})")
    busy, frames, copied = cursor.fetchone()
    cursor.close()
    return not busy and frames == copied
