"""Helpers of the store tests: expected rows, queued results, commits counted, a lock, schemas compared."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url
from twisted.internet import defer, task

from engine.model import NewDelivery, NewMessage, ProcessingResult, Status
from engine.record import schema as record_schema  # noqa: F401  (its tables share the database)
from engine.store.driver import INDEX_TABLES
from engine.store.driver.record_attach import RECORD_SCHEMA, attached, record_file
from engine.store.reads import StoredMessage
from engine.store.schema import metadata, source_files

#: Where the clock of the store tests' repositories stands.
NOW = datetime(2024, 3, 2, 8, 0, tzinfo=UTC)


def expected_message(message_id: int, new: NewMessage, events=()) -> StoredMessage:
    """What get() should return for a message stored from ``new``."""
    columns = {
        f.name: getattr(new, f.name)
        for f in dataclasses.fields(NewMessage)
        if f.name not in ("deliveries", "findings")  # not columns: rows of their own
    }
    return StoredMessage(id=message_id, **columns, deliveries=(), events=tuple(events))


def rows_of(engine: sa.Engine, *columns: sa.Column) -> list[tuple]:
    """The values of ``columns`` (of one table) in each of its rows, in id order."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(*columns).order_by(columns[0].table.c.id))]


def source_file_rows(engine: sa.Engine) -> list[tuple]:
    """(path, sha256, size, message_count) of every source_files row, in id order."""
    c = source_files.c
    return rows_of(engine, c.path, c.sha256, c.size, c.message_count)


def queued(message_id: int, *destinations: str, transformed: bytes | None = None) -> ProcessingResult:
    """A QUEUED result with one queued delivery per destination (payload names message and destination)."""
    news = tuple(
        NewDelivery(d, Status.QUEUED, f"OUT{message_id}", f"MSH|{message_id}|{d}\r".encode())
        for d in destinations
    )
    return ProcessingResult(message_id, Status.QUEUED, transformed=transformed, deliveries=news)


def commit_threads(engine: sa.Engine) -> list[str]:
    """The name of the thread of every transaction the engine commits from now on.

    On SQLite, what the database was told to commit (the driver's trace), since the intake's
    commits go to the driver without SQLAlchemy; elsewhere SQLAlchemy's commits. Connections
    checked out before the call (a kept one) are not watched.
    """
    threads: list[str] = []

    def committed() -> None:
        threads.append(threading.current_thread().name)

    if engine.dialect.name == "sqlite":

        def trace(dbapi_connection, record, proxy) -> None:
            dbapi_connection.set_trace_callback(lambda sql: sql == "COMMIT" and committed())

        sa.event.listen(engine, "checkout", trace)
    else:
        sa.event.listen(engine, "commit", lambda connection: committed())
    return threads


def count_commits(engine: sa.Engine) -> list[None]:
    """A list that grows by one for every transaction the engine commits through SQLAlchemy."""
    seen: list[None] = []
    sa.event.listen(engine, "commit", lambda connection: seen.append(None))
    return seen


def later(seconds: float, function, *args) -> defer.Deferred:
    """Call ``function(*args)`` after ``seconds`` on the global reactor."""
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, function, *args)


class WriteLock:
    """Another connection holding the lock that the store's writer needs to insert.

    ``record``: on SQLite, the lock of the record's own file instead (what its writes need).
    """

    def __init__(self, url: str, *, record: bool = False):
        self._url = make_url(url)
        self._record = record
        self._connection = None

    def hold(self) -> None:
        if self._url.get_backend_name() == "sqlite":
            path = Path(self._url.database)
            self._connection = sqlite3.connect(
                record_file(path) if self._record else path, isolation_level=None
            )
            self._connection.execute("BEGIN EXCLUSIVE")
        else:
            self._connection = psycopg.connect(
                self._url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
            self._connection.execute(
                "LOCK TABLE messages, deliveries, config_history IN ACCESS EXCLUSIVE MODE"
            )

    def release(self) -> None:
        if self._connection is not None:
            self._connection.rollback()
            self._connection.close()
            self._connection = None


def schema_differences(engine: sa.Engine, *, tables: str = "") -> list:
    """Alembic autogenerate's differences between the database and the metadata.

    Only tables whose name starts with ``tables`` are compared (every table by default). On a
    SQLite store with the record's file attached, the record's tables are compared there, and
    their references to ``messages`` (which cannot cross files) are not looked for.
    """
    with engine.connect() as connection:
        if not attached(connection):
            return _differences(connection, metadata, tables, schema=None)
        main = _differences(connection, metadata, tables, schema=None, leave_out=RECORD_PREFIX)
        record = sa.MetaData()
        sa.Table("messages", record, sa.Column("id", sa.Integer, primary_key=True))  # only referred to
        for table in metadata.tables.values():
            if table.name.startswith(RECORD_PREFIX):
                table.to_metadata(record, schema=RECORD_SCHEMA, referred_schema_fn=_same_schema)
        found = _differences(connection, record, tables, schema=RECORD_SCHEMA)
    return main + [
        difference
        for difference in found
        if not (difference[0] == "add_fk" and difference[1].elements[0].target_fullname == "messages.id")
    ]


RECORD_PREFIX = "record_"


def _same_schema(table, to_schema, constraint, referred_schema):
    return None if constraint.elements[0].target_fullname == "messages.id" else to_schema


def _differences(connection, wanted, tables: str, *, schema: str | None, leave_out: str = "") -> list:
    def compared(name: str) -> bool:
        return name.startswith(tables) and not (leave_out and name.startswith(leave_out))

    def named(name, type_, parent_names):
        if type_ == "schema":
            return name == schema
        # The content index is the driver's (an FTS5 virtual table on SQLite), outside the metadata.
        return type_ != "table" or (compared(name) and name not in INDEX_TABLES)

    def included(obj, name, type_, reflected, compare_to):
        return type_ != "table" or (obj.schema == schema and compared(name))

    opts = {
        "compare_type": True,
        "include_name": named,
        "include_object": included,
        "include_schemas": schema is not None,
    }
    return compare_metadata(MigrationContext.configure(connection, opts=opts), wanted)
