"""SQLite: the patient record's tables in a database file of their own, attached as schema ``record``.

One SQLite file has one write lock. The record's transactions write only its own tables
(``record_*``), so with them in a file of their own (``engine.db`` -> ``engine-record.db``) they take
only that file's lock, and intake's commits only the main file's: neither waits for the other.
Every connection of the store attaches the file as ``record``; SQLite resolves an unqualified
table name in ``main`` first, then in the attached schemas, so every statement naming ``record_*``
tables finds them there.

The tables are moved by migration 0025 (``move_record_tables``), which rewrites their DDL: a
foreign key cannot name a table of another file, so the references to ``messages`` are left out
there and given back when they come home. What they did is done elsewhere: the ingestor refuses a
message id that no stored message has (engine/record/ingest.py), and no message row is ever
deleted (retention clears content, not rows), so nothing is left to set NULL or cascade.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stdlib reads (sqlite_reads.py) attach the file without importing SQLAlchemy
    import sqlalchemy as sa

__all__ = [
    "MOVED_SUFFIX",
    "RECORD_SCHEMA",
    "attach_record",
    "attached",
    "drop_tables",
    "forget_newer_messages",
    "move_record_tables",
    "record_file",
    "record_tables",
    "rename_tables",
]

#: The schema name the record's file is attached as.
RECORD_SCHEMA = "record"
#: What main's record tables are renamed to once copied (migration 0025), until the copy is committed.
MOVED_SUFFIX = "_moved"

_TABLE_PREFIX = "record_"
# A record table's row in sqlite_master.
_LISTED = "type = 'table' AND name LIKE 'record\\_%' ESCAPE '\\'"
# A table's foreign key to the messages:
# ", CONSTRAINT fk_x FOREIGN KEY(message_id) REFERENCES messages (id) ON DELETE ..."
_MESSAGES_FK = re.compile(
    r",\s*CONSTRAINT \w+ FOREIGN KEY\s*\(message_id\) REFERENCES \"?messages\"? \(id\)"
    r"(?: ON DELETE (?:SET NULL|CASCADE))?"
)
_CREATE_TABLE = re.compile(r"^CREATE TABLE \"?(\w+)\"?")
_CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX \"?(\w+)\"? ON \"?(\w+)\"?")
# What the references to messages did: rows keep their data (SET NULL), the applied marks go (CASCADE).
_ON_DELETE = {"record_applied_messages": "CASCADE"}


def record_file(database: Path) -> Path:
    """The record's file beside a store's SQLite file: ``data/engine.db`` -> ``data/engine-record.db``."""
    return database.with_name(f"{database.stem}-record{database.suffix}")


def attach_record(cursor, path: Path | str) -> None:
    """Attach the record's file (a path, or a ``file:`` URI on a URI connection) as schema ``record``."""
    cursor.execute(f"ATTACH DATABASE ? AS {RECORD_SCHEMA}", (str(path),))


def attached(connection: sa.Connection) -> bool:
    """Whether the connection has the record's file attached (SQLite stores on a file have)."""
    if connection.dialect.name != "sqlite":
        return False
    names = {row[1] for row in connection.exec_driver_sql("PRAGMA database_list")}
    return RECORD_SCHEMA in names


def record_tables(connection: sa.Connection, schema: str, *, suffix: str = "") -> list[str]:
    """The record's tables in ``schema`` (named ``record_*`` and ending with ``suffix``), parents first."""
    rows = connection.exec_driver_sql(f"SELECT name FROM {schema}.sqlite_master WHERE {_LISTED}").scalars()
    names = sorted(name for name in rows if name.endswith(suffix) and not _moved(name, suffix))
    parents = {
        name: {
            row[2] + suffix if suffix and not row[2].endswith(suffix) else row[2]
            for row in connection.exec_driver_sql(f'PRAGMA {schema}.foreign_key_list("{name}")')
        }
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [
            n for n in names if n not in ordered and parents[n] <= {*ordered, n} | _outside(parents[n], names)
        ]
        if not ready:
            raise RuntimeError(f"the record's tables reference each other in a cycle: {sorted(parents)}")
        ordered.extend(ready)
    return ordered


def move_record_tables(connection: sa.Connection, source: str, target: str, *, suffix: str = "") -> None:
    """Copy the record's tables (``record_*<suffix>``) from schema ``source`` to ``target``, with their
    indexes and rows, under their own names (the suffix gone); the sources stay (``drop_tables``).

    Into ``record``, a table loses its foreign keys to ``messages`` (SQLite cannot enforce one
    across files); into ``main`` it gets them back. A table of that name already in ``target``
    is dropped first: it is what a crash between the commits of the two files left (see
    engine.store.migrations), and the source is what holds the rows.
    """
    tables = record_tables(connection, source, suffix=suffix)
    for name in reversed(tables):
        connection.exec_driver_sql(f'DROP TABLE IF EXISTS {target}."{_unmoved(name, suffix)}"')
    for name in tables:
        table = _unmoved(name, suffix)
        ddl = connection.exec_driver_sql(
            f"SELECT sql FROM {source}.sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar_one()
        columns = [row[1] for row in connection.exec_driver_sql(f'PRAGMA {source}.table_info("{name}")')]
        connection.exec_driver_sql(_table_ddl(ddl, table, target, suffix, refers="message_id" in columns))
        for (index,) in connection.exec_driver_sql(
            f"SELECT sql FROM {source}.sqlite_master"
            " WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            (name,),
        ):
            connection.exec_driver_sql(_index_ddl(index, table, target))
        listed = ", ".join(f'"{column}"' for column in columns)
        connection.exec_driver_sql(
            f'INSERT INTO {target}."{table}" ({listed}) SELECT {listed} FROM {source}."{name}"'
        )
    if target == RECORD_SCHEMA:
        for name in tables:
            table = _unmoved(name, suffix)
            for row in connection.exec_driver_sql(f'PRAGMA {target}.foreign_key_list("{table}")'):
                if not row[2].startswith(_TABLE_PREFIX):
                    raise RuntimeError(f"{table} still references {row[2]} once moved: its DDL was misread")


def forget_newer_messages(record_copy: Path, messages_copy: Path) -> None:
    """In a backup's copy of the record's file, forget every message newer than the copy of the
    store's file holds: their applied marks go, and the record's rows no longer name them.

    The store's file is copied first, so the record's copy may hold what messages received after
    its copy did. A store restored from the two would give those ids to new messages, which the
    record would then take for applied already (and the rows for theirs).
    """
    connection = sqlite3.connect(record_copy, isolation_level=None)
    try:
        connection.execute("ATTACH DATABASE ? AS copied", (str(messages_copy),))
        newest = connection.execute("SELECT coalesce(max(id), 0) FROM copied.messages").fetchone()[0]
        names = [row[0] for row in connection.execute(f"SELECT name FROM main.sqlite_master WHERE {_LISTED}")]
        # TRANSACTION: the copy forgets the newer messages at once (it is nobody's store yet).
        connection.execute("BEGIN")
        for name in names:
            columns = {row[1] for row in connection.execute(f'PRAGMA main.table_info("{name}")')}
            if name == "record_applied_messages":
                connection.execute(f'DELETE FROM main."{name}" WHERE message_id > ?', (newest,))
            elif "message_id" in columns:
                connection.execute(
                    f'UPDATE main."{name}" SET message_id = NULL WHERE message_id > ?', (newest,)
                )
        connection.execute("COMMIT")
        connection.execute("DETACH DATABASE copied")
    finally:
        connection.close()


def drop_tables(connection: sa.Connection, schema: str, names: Iterable[str]) -> None:
    """Drop the tables of ``schema`` named, in the order given (children first)."""
    for name in names:
        connection.exec_driver_sql(f'DROP TABLE {schema}."{name}"')


def rename_tables(connection: sa.Connection, schema: str, names: Iterable[str], suffix: str) -> None:
    """Rename each table of ``schema`` named to its name with ``suffix`` (references follow)."""
    for name in names:
        connection.exec_driver_sql(f'ALTER TABLE {schema}."{name}" RENAME TO "{name}{suffix}"')


def _table_ddl(ddl: str, table: str, target: str, suffix: str, *, refers: bool) -> str:
    """``ddl`` of a record table made for ``target``, under the name ``table``; ``refers``: it has a
    message_id column (a reference to messages in main)."""
    if suffix:
        ddl = re.sub(rf'"?\b({_TABLE_PREFIX}\w+){suffix}\b"?', r'"\1"', ddl)
    ddl = _CREATE_TABLE.sub(f'CREATE TABLE {target}."{table}"', ddl, count=1)
    ddl = _MESSAGES_FK.sub("", ddl)
    if target != RECORD_SCHEMA and refers:
        on_delete = _ON_DELETE.get(table, "SET NULL")
        end = ddl.rstrip().rfind(")")
        ddl = (
            f"{ddl[:end].rstrip()}, \n\tCONSTRAINT fk_{table}_message_id_messages FOREIGN KEY(message_id)"
            f" REFERENCES messages (id) ON DELETE {on_delete}\n)"
        )
    return ddl


def _index_ddl(ddl: str, table: str, target: str) -> str:
    def qualified(found: re.Match) -> str:
        return f'CREATE {found.group(1) or ""}INDEX {target}."{found.group(2)}" ON "{table}"'

    return _CREATE_INDEX.sub(qualified, ddl, count=1)


def _unmoved(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if suffix else name


def _moved(name: str, suffix: str) -> bool:
    """A table left renamed by 0025 while the tables of ``suffix`` (none) are asked for."""
    return not suffix and name.endswith(MOVED_SUFFIX)


def _outside(parents: set[str], names: list[str]) -> set[str]:
    return {parent for parent in parents if parent not in names}
