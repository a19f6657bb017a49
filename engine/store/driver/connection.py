"""Statements outside any transaction on the driver's own connection: settings, WAL checkpoints."""

from __future__ import annotations

import sqlalchemy as sa


def set_pragmas(connection: sa.Connection, **settings: object) -> None:
    """SQLite: set each ``PRAGMA name=value`` on the connection, in order, outside any transaction."""
    cursor = connection.connection.driver_connection.cursor()
    for name, value in settings.items():
        cursor.execute(f"PRAGMA {name}={value}")
    cursor.close()


def checkpoint_wal(connection: sa.Connection, *, truncate: bool = False) -> bool:
    """SQLite: copy the WAL into the database file; whether all of it was (readers may hold some back).

    PASSIVE waits for no one. ``truncate``: wait (the busy timeout) for the writers and readers,
    copy everything and truncate the WAL file to zero bytes (TRUNCATE).
    On the driver: a checkpoint is no transaction, and SQLAlchemy would begin (and commit) one.
    """
    mode = "TRUNCATE" if truncate else "PASSIVE"
    cursor = connection.connection.driver_connection.execute(f"PRAGMA wal_checkpoint({mode})")
    busy, frames, copied = cursor.fetchone()
    cursor.close()
    return not busy and frames == copied
