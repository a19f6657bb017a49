"""Statements outside any transaction on the driver's own connection: settings, WAL checkpoints."""

from __future__ import annotations

import sqlalchemy as sa


def set_pragmas(connection: sa.Connection, **settings: object) -> None:
    """SQLite: set each ``PRAGMA name=value`` on the connection, in order, outside any transaction."""
    cursor = connection.connection.driver_connection.cursor()
    for name, value in settings.items():
        cursor.execute(f"PRAGMA {name}={value}")
    cursor.close()


def checkpoint_wal(connection: sa.Connection) -> None:
    """SQLite: copy the WAL into the database file, waiting for no one (PASSIVE).

    On the driver: a checkpoint is no transaction, and SQLAlchemy would begin (and commit) one.
    """
    connection.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
