"""Statements outside any transaction on the driver's own connection: settings, WAL checkpoints."""

from __future__ import annotations

from typing import NamedTuple

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


class Checkpoint(NamedTuple):
    """What a WAL checkpoint did: whether it copied all of the WAL, and how many frames the WAL held."""

    complete: bool  # False when readers held some back, or another connection held the lock
    frames: int  # pages written to the WAL since it last started over (a page and a 24-byte header each)


def checkpoint_wal(connection: sa.Connection, *, truncate: bool = False, schema: str = "main") -> Checkpoint:
    """SQLite: copy the WAL of ``schema``'s file into that file (readers may hold some back).

    One file's: without a schema the pragma checkpoints every attached file, and TRUNCATE waits
    for each file's writers (the store's writer would wait for the record's, engine.store.record_lane).

    PASSIVE waits for no one. ``truncate``: wait (TRUNCATE_WAIT_MS at most) for the writers and
    readers, copy everything and truncate the WAL file to zero bytes (TRUNCATE).
    On the driver: a checkpoint is no transaction, and SQLAlchemy would begin (and commit) one.
    """
    driver = connection.connection.driver_connection
    if not truncate:
        return _checkpoint(driver, schema, "PASSIVE")
    waited = driver.execute("PRAGMA busy_timeout").fetchone()[0]
    driver.execute(f"PRAGMA busy_timeout={min(waited, TRUNCATE_WAIT_MS)}").close()
    try:
        return _checkpoint(driver, schema, "TRUNCATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout={waited}").close()


def _checkpoint(driver, schema: str, mode: str) -> Checkpoint:
    cursor = driver.execute(f"PRAGMA {schema}.wal_checkpoint({mode})")
    busy, frames, copied = cursor.fetchone()
    cursor.close()
    return Checkpoint(not busy and frames == copied, max(frames, 0))
