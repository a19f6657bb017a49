"""SQLite's file space and its online copy: page counts, incremental vacuum, VACUUM, the backup API.

All of it runs outside any transaction (SQLite refuses VACUUM in one; an incremental vacuum step
is its own), on the driver's connection: SQLAlchemy would wrap each in a transaction of its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from engine.errors import StoreError
from engine.store.driver.connection import set_pragmas

# PRAGMA auto_vacuum values.
AUTO_VACUUM_NONE, AUTO_VACUUM_FULL, AUTO_VACUUM_INCREMENTAL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class FileSpace:
    """How a SQLite file's pages are used: all of them, the free ones, their size, the auto_vacuum mode."""

    page_count: int
    freelist_count: int
    page_size: int
    auto_vacuum: int

    @property
    def file_bytes(self) -> int:
        """The size of the database file (the WAL aside) once checkpointed."""
        return self.page_count * self.page_size

    @property
    def free_bytes(self) -> int:
        """What the free pages hold: space SQLite reuses, and an incremental vacuum gives back."""
        return self.freelist_count * self.page_size


def _pragma(connection: sa.Connection, name: str) -> int:
    return connection.connection.driver_connection.execute(f"PRAGMA {name}").fetchone()[0]


def file_space(connection: sa.Connection) -> FileSpace:
    """The page counts of the connection's SQLite file."""
    return FileSpace(
        _pragma(connection, "page_count"),
        _pragma(connection, "freelist_count"),
        _pragma(connection, "page_size"),
        _pragma(connection, "auto_vacuum"),
    )


def incremental_vacuum(connection: sa.Connection, pages: int) -> int:
    """Give up to ``pages`` free pages back to the file system (auto_vacuum=INCREMENTAL); how many it freed.

    One write transaction of its own: the pages at the end of the file move into free ones,
    then the file is cut (at the next checkpoint, in WAL mode).
    """
    before = _pragma(connection, "freelist_count")
    # Each step of the statement frees one page, and sqlite3's execute() steps a statement without
    # result columns once: executescript() steps it to the end (there is no transaction to commit).
    connection.connection.driver_connection.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
    return before - _pragma(connection, "freelist_count")


def vacuum_to_incremental(connection: sa.Connection, schema: str = "main") -> None:
    """Rewrite and compact ``schema``'s whole file, with auto_vacuum=INCREMENTAL (older files need it once).

    VACUUM holds the write lock for as long as it copies the database, and needs as much free
    disk again as the file takes.
    """
    driver = connection.connection.driver_connection
    driver.execute(f"PRAGMA {schema}.auto_vacuum={AUTO_VACUUM_INCREMENTAL}")
    driver.execute(f"VACUUM {schema}")


def vacuum_postgresql(engine: sa.Engine, tables: Sequence[sa.Table]) -> None:
    """PostgreSQL: a plain VACUUM (ANALYZE) of ``tables`` now, rather than at autovacuum's next turn.

    Plain VACUUM takes no lock that stops reads or writes; it makes dead rows' space reusable
    inside the table files (VACUUM FULL would return it to the OS, under an exclusive lock).
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(table.name for table in tables)}")


def backup_sqlite(
    source: Path,
    destination: Path,
    *,
    pages: int,
    pause: float,
    lock_timeout: float,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Copy the SQLite file ``source`` to ``destination`` with the backup API, ``pages`` at a step.

    All steps read one snapshot: the source connection holds a read transaction from the first
    step to the last. Without it every commit of the running engine between two steps would
    start the copy over (under steady intake it never finished). In WAL mode a reader holds no
    writer up: the engine commits on while the copy is made (the WAL only grows meanwhile, as a
    checkpoint cannot go past the snapshot). ``progress(remaining, total)`` is called after each step.
    """
    reader = sqlite3.connect(source, timeout=lock_timeout, isolation_level=None)
    try:
        copy = sqlite3.connect(destination)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            reader.backup(
                copy,
                pages=pages,
                progress=(lambda status, remaining, total: progress(remaining, total)) if progress else None,
                sleep=pause,
            )
            reader.execute("COMMIT")
        finally:
            copy.close()
    finally:
        reader.close()


def integrity_problems(path: Path) -> list[str]:
    """What ``PRAGMA integrity_check`` finds wrong with the SQLite file at ``path``: [] when it is sound."""
    connection = sqlite3.connect(path)
    try:
        rows = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()
    return [] if rows == ["ok"] else rows


@contextlib.contextmanager
def foreign_keys_off(connection: sa.Connection) -> Iterator[None]:
    """SQLite: foreign keys unenforced on ``connection`` (in no transaction) inside, for ``repack_rows``.

    Set outside any transaction (inside one SQLite ignores it), checked, and set back after.
    """
    set_pragmas(connection, foreign_keys="OFF")
    try:
        if _pragma(connection, "foreign_keys") != 0:
            raise StoreError("could not turn foreign keys off: the connection is in a transaction")
        yield
    finally:
        try:
            set_pragmas(connection, foreign_keys="ON")
        except Exception:
            connection.invalidate()  # never back into the pool without its foreign keys
            raise


def repack_rows(connection: sa.Connection, key: sa.Column, values: Sequence[int]) -> None:
    """SQLite: delete the rows whose ``key`` is in ``values``, and insert them again as they were.

    Rows that shrank (pruned content) keep the room they took in their pages: rows go in in id
    order, so no later row ever uses it. Deleted, their pages empty and go to the free list;
    inserted again, they fill a few pages. Foreign keys must be off (``foreign_keys_off``): a
    delete would cascade to the rows that reference them. In the caller's transaction.
    """
    if not values:
        return
    table, marks = key.table.name, ", ".join("?" * len(values))
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(
            f"CREATE TEMP TABLE repack AS SELECT * FROM {table} WHERE {key.name} IN ({marks})", values
        )
        cursor.execute(f"DELETE FROM {table} WHERE {key.name} IN ({marks})", values)
        cursor.execute(f"INSERT INTO {table} SELECT * FROM temp.repack ORDER BY rowid")
        cursor.execute("DROP TABLE temp.repack")
    finally:
        cursor.close()
