"""The message store: a blocking repository, and the engine's asynchronous face over the whole store.

``MessageRepository`` does the SQL of messages and returns plain frozen dataclasses; it blocks,
so it runs on threads (and in the CLI), as do ``QueueRepository`` (``queues.py``) and
``ConfigRepository`` (``configs.py``). ``MessageStore`` is what the reactor talks to: writes
go to one writer thread, in order (``add()`` calls pending together are committed in one
transaction: group commit) and fire their Deferreds after COMMIT; reads run on a small pool.

On SQLite with ``durability: process`` (a commit is a write into the WAL, no fsync), the adds
made during one reactor turn are committed at the end of that turn on the reactor thread
itself, when no other write is running: a thread hop each way and the two threads' contention
for the GIL cost more than the commit. Whenever that cannot be done at once (the writer thread
or another process holds the write lock, or anything fails) the adds go to the writer thread,
which waits for the lock as long as ``lock_timeout`` allows and judges errors as it always does.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.errors import StoreError
from engine.model import (
    AttemptResult,
    NewMessage,
    ProcessingResult,
    SourceFile,
    Status,
    require_aware,
    utc_now,
)
from engine.store.configs import ConfigRepository
from engine.store.db import create_engine_for, store_errors
from engine.store.migrations import upgrade
from engine.store.queues import (
    _INSERT_EVENTS,
    DeliverySummary,
    QueueRepository,
    _binds,
    _new_delivery_row,
    _Rows,
    _values_of,
    processing_rows,
    sqlite_runs,
    unnest_rows,
    values_list,
)
from engine.store.schema import deliveries, fit_text, message_events, messages, source_files

log = Logger(namespace="engine.store")


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """Search criteria (all given ones must match, exactly) and a page: newest first, ids below ``before_id``."""

    control_id: str | None = None
    patient_id: str | None = None  # PID-3.1 of the message's first patient identifier
    message_type: str | None = None  # "ADT", "ADT^A01" or "ADT^A01^ADT_A01"; an empty component matches any
    sending_application: str | None = None
    sending_facility: str | None = None
    status: str | None = None
    channel: str | None = None
    listener: str | None = None
    since: datetime | None = None  # received_at >= since
    until: datetime | None = None  # received_at < until
    limit: int = 100
    before_id: int | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                require_aware(moment, name)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A stored message without its content: what a list of messages shows."""

    id: int
    received_at: datetime
    listener: str
    channel: str | None
    peer: str
    status: str
    sending_application: str
    sending_facility: str
    message_code: str
    trigger_event: str
    control_id: str
    version: str
    ack_code: str
    error: str
    patient_id: str

    @property
    def message_type(self) -> str:
        """MSH-9 as operators write it: ``ADT^A01`` (``ADT`` when there is no trigger event)."""
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    def to_json_dict(self) -> dict:
        """The summary as JSON-ready values: ``type`` is message_type, ``received_at`` ISO 8601."""
        return {
            "id": self.id,
            "channel": self.channel,
            "control_id": self.control_id,
            "type": self.message_type,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "listener": self.listener,
            "peer": self.peer,
            "sending_application": self.sending_application,
            "sending_facility": self.sending_facility,
            "message_code": self.message_code,
            "trigger_event": self.trigger_event,
            "version": self.version,
            "ack_code": self.ack_code,
            "error": self.error,
            "patient_id": self.patient_id,
        }


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One later status change of a stored message, or of its delivery to ``destination``."""

    id: int
    at: datetime
    status: str
    detail: str
    destination: str | None = None  # None: the message's own status


@dataclass(frozen=True, slots=True)
class StoredMessage(MessageSummary):
    """A stored message with its content at every stage, the ACK we answered with, its deliveries and status history."""

    raw: bytes
    ack: bytes | None
    transformed: bytes | None  # after the channel's transforms; None before processing or without transforms
    receiving_application: str
    receiving_facility: str
    message_structure: str
    processing_id: str
    charset: str
    batch_control_id: str | None
    batch_index: int | None
    deliveries: tuple[DeliverySummary, ...]  # oldest first, superseded ones included
    events: tuple[MessageEvent, ...]

    @property
    def summary(self) -> MessageSummary:
        """Just the summary part, e.g. to print it like a search result."""
        return MessageSummary(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MessageSummary)})


_NEW_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(NewMessage) if f.name != "deliveries")
_SUMMARY_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(MessageSummary))
_STORED_COLUMNS = tuple(
    messages.c[f.name] for f in dataclasses.fields(StoredMessage) if f.name not in ("deliveries", "events")
)
_EVENT_COLUMNS = tuple(message_events.c[f.name] for f in dataclasses.fields(MessageEvent))
_DELIVERY_COLUMNS = tuple(deliveries.c[f.name] for f in dataclasses.fields(DeliverySummary))
# PostgreSQL: a group's rows go in one statement up to this many (its values are arrays, so the
# statement's text and parameters are the same for any count).
_MAX_ROWS_PER_STATEMENT = 1000
# PostgreSQL: a group goes as VALUES lists of scalar parameters up to this many of them (the
# server takes 65,535; a group of 8 messages processed for one destination has 400), else as arrays.
_VALUES_MAX_PARAMETERS = 4096
# ... and the texts of so many shapes (messages, deliveries, events) are kept.
_VALUES_TEXTS_KEPT = 256

# The columns an insert fills, in order: NewMessage's fields, then status_at (= received_at).
_INSERT_COLUMNS = (*_NEW_MESSAGE_FIELDS, "status_at")
_MESSAGE_VALUES = operator.attrgetter(*_NEW_MESSAGE_FIELDS)
# The deliveries of messages processed at intake: their ids are not needed (nothing waits on them).
_INSERT_DELIVERY_ROWS_COLUMNS = tuple(_new_delivery_row(0, "", "", "", "", None, "", utc_now()))
_INSERT_DELIVERY_ROWS = _Rows(
    sa.insert(deliveries).values(_binds(deliveries, *_INSERT_DELIVERY_ROWS_COLUMNS))
)


class _MessageInsert:
    """The one INSERT of the intake path, prepared for one database dialect.

    Each message is a tuple handed to the driver as it is: SQLAlchemy's per-row work (a dict per
    row, a bind processor per value) cost more than the insert itself. What SQLAlchemy would do
    to a value is still done, by the same bind processors, but only for the columns that have one.

    Header columns are search copies of MSH fields (raw keeps every byte), so a value that does
    not fit loses NULs and is cut (as fit_text does) rather than refused: refusing would make a
    sender resend it forever.
    """

    def __init__(self, dialect: sa.Dialect):
        self.sqlite = dialect.name == "sqlite"
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        columns = ", ".join(_INSERT_COLUMNS)
        self._values = f"({', '.join([marker] * len(_INSERT_COLUMNS))})"
        self.sql = f"INSERT INTO messages ({columns}) VALUES {self._values}"
        if not self.sqlite:
            self.sql += " RETURNING id"
        self.dbapi_error = dialect.dbapi.Error
        self._many: dict[int, str] = {}  # SQLite: the INSERT of that many rows
        self.dialect = dialect
        self._received_at = _NEW_MESSAGE_FIELDS.index("received_at")
        processors = (
            (i, messages.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for i, name in enumerate(_NEW_MESSAGE_FIELDS)
        )
        self._processors = tuple((i, processor) for i, processor in processors if processor is not None)
        self._text = tuple(
            (i, messages.c[name].type.length)
            for i, name in enumerate(_NEW_MESSAGE_FIELDS)
            if isinstance(messages.c[name].type, sa.String)
        )
        if not self.sqlite:
            # The rows come as one array per column; ids are handed out in the order the rows come (ORDER BY).
            self._alone_sql = f"{_insert_select(messages, _INSERT_COLUMNS, dialect)} FROM {unnest_rows(messages, _INSERT_COLUMNS, dialect)} ORDER BY v.i RETURNING id"
            delivery = _RowsOf(
                deliveries,
                tuple(name for name in _INSERT_DELIVERY_ROWS_COLUMNS if name != "message_id"),
                dialect,
            )
            event = _RowsOf(message_events, ("at", "status", "detail", "destination"), dialect)
            self._processed = (delivery, event)
            # Each row names its message by position (k), which the statement joins to the new ids.
            self._processed_sql = (
                f"WITH m AS ({self._alone_sql}), n AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM m),"
                f" d AS ({delivery.insert_select()}), e AS ({event.insert_select()}) SELECT id FROM m"
            )
            from psycopg import RawCursor

            self._raw_cursor = RawCursor
            self._listed = _ValuesStatements(dialect, delivery, event)

    def values(self, message: NewMessage) -> list:
        """The row of one message, in _INSERT_COLUMNS order, ready for the driver."""
        row = list(_MESSAGE_VALUES(message))
        for i, length in self._text:
            value = row[i]
            if value and (("\x00" in value) or (length is not None and len(value) > length)):
                row[i] = value.replace("\x00", "")[:length]
        for i, processor in self._processors:
            row[i] = processor(row[i])
        row.append(row[self._received_at])  # status_at: received, processed once
        return row

    def run(self, connection: sa.Connection, rows: list[list]) -> list[int]:
        """Insert the rows inside the connection's transaction; their ids, in order."""
        cursor = connection.connection.driver_connection.cursor()
        try:
            if self.sqlite:
                return self._run_sqlite(cursor, rows)
            cursor.executemany(self.sql, rows, returning=True)
            ids = []
            while True:
                ids.append(cursor.fetchone()[0])
                if not cursor.nextset():
                    return ids
        except self.dbapi_error as error:
            raise self._as_sqlalchemy_error(error, self.sql) from error
        finally:
            cursor.close()

    def _run_sqlite(self, cursor, rows: list[list]) -> list[int]:
        """SQLite: the rows in a few multi-row INSERTs (chunks of a power of two, each statement kept prepared by sqlite3).

        One step per row cost ~4 us a message more, and each step lets go of the GIL (a chance for
        another thread to keep the reactor waiting). A new row's id is one more than the largest
        (an INTEGER PRIMARY KEY without AUTOINCREMENT) and this transaction holds the write lock,
        so a statement's rows have consecutive ids, ending at lastrowid.
        """
        ids: list[int] = []
        for start, count in sqlite_runs(len(rows)):
            sql = self._many.get(count)
            if sql is None:
                sql = self._many[count] = f"{self.sql}{(', ' + self._values) * (count - 1)}"
            cursor.execute(sql, [value for row in rows[start : start + count] for value in row])
            last = cursor.lastrowid
            ids.extend(range(last - count + 1, last + 1))
        return ids

    def run_alone(
        self,
        connection: sa.Connection,
        rows: list[list],
        processed: Sequence[NewMessage] = (),
        now: datetime | None = None,
    ) -> list[int]:
        """PostgreSQL: insert the rows in one statement that commits by itself; their ids, in order.

        ``processed`` are the messages of ``rows`` when some were processed at intake: their
        deliveries and events go in the same statement (data-modifying CTEs), atomic as well.

        The connection must be in no transaction. BEGIN, a pipelined executemany and COMMIT cost
        three round trips and psycopg's pipeline machinery; one INSERT in autocommit is atomic all
        the same and costs one (measured in process: 0.7-1.1 ms -> 0.3 ms for a single message,
        0.14-0.23 -> 0.12 ms a message in groups of 8). A small group's values are scalar
        parameters (_ValuesStatements); a large one's are arrays, one per column, so the
        statement's text is the same for any number of rows: psycopg parses it once (it re-parsed
        a multi-row VALUES list of each length) and the server runs it prepared. Either way the
        ids come from the sequence in row order (ORDER BY the ordinal), so sorted they are the
        rows' ids in order (what SQLAlchemy's insertmanyvalues relies on too).
        """
        if len(rows) > _MAX_ROWS_PER_STATEMENT:
            raise ValueError(f"at most {_MAX_ROWS_PER_STATEMENT} rows per statement, not {len(rows)}")
        # Each row names its message by position among the statement's (1, 2, ...).
        delivery_rows, event_rows = (
            _processed_rows(processed, range(1, len(processed) + 1), now) if processed else ([], [])
        )
        listed = self._listed.statement(rows, delivery_rows, event_rows)
        if listed is not None:
            return self._run_listed(connection, *listed)
        driver = connection.connection.driver_connection
        sql, parameters = self._alone_sql, [list(column) for column in zip(*rows)]
        if processed:
            sql = self._processed_sql
            delivery, event = self._processed
            parameters += delivery.arrays(delivery_rows) + event.arrays(event_rows)
        driver.autocommit = True
        try:
            # Through SQLAlchemy, so its events see the statement and the (logical) commit; the
            # driver's commit sends nothing, since the statement committed itself.
            ids = sorted(connection.exec_driver_sql(sql, tuple(parameters)).scalars())
            connection.commit()
            return ids
        except BaseException:
            connection.rollback()
            raise
        finally:
            driver.autocommit = False

    def _run_listed(self, connection: sa.Connection, sql: str, parameters: list) -> list[int]:
        """Run a statement of _ValuesStatements on its own (autocommit) with the driver's RawCursor; the ids, in order.

        It runs inside SQLAlchemy's (logical) transaction, so SQLAlchemy's events see the commit,
        as for any other group; the driver's commit sends nothing, since the statement committed itself.
        """
        driver = connection.connection.driver_connection
        driver.autocommit = True
        try:
            with connection.begin(), self._raw_cursor(driver) as cursor:
                cursor.execute(sql, parameters)
                return sorted(row[0] for row in cursor.fetchall())
        except self.dbapi_error as error:
            raise self._as_sqlalchemy_error(error, sql) from error
        finally:
            driver.autocommit = False

    def fits_one_statement(self, rows: list[list]) -> bool:
        """Whether run_alone takes these rows."""
        return len(rows) <= _MAX_ROWS_PER_STATEMENT

    def _as_sqlalchemy_error(self, error: Exception, sql: str) -> sa_exc.DBAPIError:
        """The driver's error as SQLAlchemy would raise it, so store_errors and the writer judge it the same way."""
        return sa_exc.DBAPIError.instance(
            sql, None, error, self.dbapi_error, hide_parameters=True, dialect=self.dialect
        )


class _RowsOf:
    """PostgreSQL: rows of a table to insert for the messages of the same statement, each joined to its message by position (``n.k``).

    The rows come as arrays, one per column, beside the position of each row's message.
    """

    def __init__(self, table: sa.Table, names: tuple[str, ...], dialect: sa.Dialect):
        self._width = len(names)
        self._table, self._names, self._dialect = table, names, dialect
        self._values_of = _values_of(
            tuple(
                (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect), None)
                for name in names
            )
        )
        # Ids are handed out in the order the rows come: the order given (a queue's order is its ids').
        self._insert = _insert_select(table, ("message_id", *names), dialect, ("n.id",))
        self._sql = f"{self._insert} FROM {unnest_rows(table, names, dialect, positions=True)} JOIN n USING (k) ORDER BY v.i"

    def arrays(self, rows: Sequence[dict]) -> list[list]:
        """The parameters of ``insert_select`` for these rows (dicts by column name, ``message_id`` the message's position): one list per column, processed for the driver."""
        times: dict = {}
        columns = list(zip(*(self._values_of(row, times) for row in rows))) or [()] * self._width
        return [[row["message_id"] for row in rows], *map(list, columns)]

    def insert_select(self) -> str:
        """The INSERT of the rows, each joined to its message (``n``, by position ``k``)."""
        return self._sql

    @property
    def width(self) -> int:
        """Parameters a row takes in ``listed``: its message's position, then its values."""
        return 1 + self._width

    def listed(self, rows: Sequence[dict]) -> list:
        """The parameters of ``insert_listed`` for these rows: each row's message position and values, row after row."""
        times: dict = {}
        parameters: list = []
        for row in rows:
            parameters.append(row["message_id"])
            parameters += self._values_of(row, times)
        return parameters

    def insert_listed(self, count: int, numbers: Iterator[int]) -> str:
        """The INSERT of ``count`` rows given as scalar parameters (placeholders numbered from ``numbers``), each joined to its message."""
        return f"{self._insert} FROM {values_list(self._table, self._names, self._dialect, count, numbers, positions=True)} JOIN n USING (k) ORDER BY v.i"


class _ValuesStatements:
    """PostgreSQL: the statement of a small group as VALUES lists of scalar parameters ($1, $2, ...), for psycopg's RawCursor.

    What run_alone sends as arrays (one statement text for any count) costs psycopg most of its
    Python work: it dumps an array element by element in Python, while scalar parameters are
    dumped by its C code, and a RawCursor's ``$n`` statement is not parsed in Python at all.
    Measured in process, a group of 4 messages cost 349 us of CPU through SQLAlchemy and arrays
    and 143 us as this; one message 210 against 113. So a group goes this way while its
    parameters are few (``_VALUES_MAX_PARAMETERS``); a larger one, rare on the intake path, as
    arrays. Each text is kept by its shape (messages, deliveries, events), so psycopg prepares
    what repeats on the server; rows keep their order as with arrays (``ORDER BY v.i``), each
    placeholder cast to its column's type (a NULL or a text in a VALUES list has none).
    """

    def __init__(self, dialect: sa.Dialect, delivery: _RowsOf, event: _RowsOf):
        self._dialect = dialect
        self._delivery, self._event = delivery, event
        self._texts: dict[tuple[int, int, int], str] = {}

    def statement(
        self, rows: list[list], delivery_rows: list[dict], event_rows: list[dict]
    ) -> tuple[str, list] | None:
        """(text, parameters) of the messages' rows with the deliveries and events rows of those processed at intake; None when too many parameters."""
        count = (
            len(rows) * len(_INSERT_COLUMNS)
            + len(delivery_rows) * self._delivery.width
            + len(event_rows) * self._event.width
        )
        if count > _VALUES_MAX_PARAMETERS:
            return None
        parameters = (
            [value for row in rows for value in row]
            + self._delivery.listed(delivery_rows)
            + self._event.listed(event_rows)
        )
        shape = (len(rows), len(delivery_rows), len(event_rows))
        text = self._texts.get(shape)
        if text is None:
            if len(self._texts) >= _VALUES_TEXTS_KEPT:
                self._texts.clear()
            text = self._texts[shape] = self._text(*shape)
        return text, parameters

    def _text(self, messages_count: int, deliveries_count: int, events_count: int) -> str:
        numbers = itertools.count(1)
        insert = f"{_insert_select(messages, _INSERT_COLUMNS, self._dialect)} FROM {values_list(messages, _INSERT_COLUMNS, self._dialect, messages_count, numbers)} ORDER BY v.i RETURNING id"
        if not events_count:
            return insert
        parts = [f"WITH m AS ({insert}), n AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM m)"]
        for name, rows_of, count in (
            ("d", self._delivery, deliveries_count),
            ("e", self._event, events_count),
        ):
            if count:
                parts.append(f"{name} AS ({rows_of.insert_listed(count, numbers)})")
        return ", ".join(parts) + " SELECT id FROM m"


def _insert_select(
    table: sa.Table, columns: Sequence[str], dialect: sa.Dialect, values: Sequence[str] = ()
) -> str:
    """PostgreSQL: ``INSERT INTO <table> (<columns>) SELECT <values>, v.<column>, ...``: the given ``values`` fill the first columns, ``v`` the rest."""
    quote = dialect.identifier_preparer.quote
    picked = [*values, *(f"v.{quote(name)}" for name in columns[len(values) :])]
    return f"INSERT INTO {table.name} ({', '.join(map(quote, columns))}) SELECT {', '.join(picked)}"


def _processed_rows(
    new_messages: Sequence[NewMessage], message_ids: Iterable[int], now: datetime
) -> tuple[list[dict], list[dict]]:
    """The deliveries and events rows of the messages processed at intake, as QueueRepository.record_processing writes them."""
    rows: list[dict] = []
    events: list[dict] = []
    for message, message_id in zip(new_messages, message_ids):
        if message.deliveries is not None:
            processing_rows(
                message_id,
                message.channel,
                message.status,
                message.error,
                message.deliveries,
                now,
                rows,
                events,
            )
    return rows, events


def _record_processed(
    connection: sa.Connection, new_messages: Sequence[NewMessage], ids: Sequence[int], now: datetime
) -> None:
    """Insert the deliveries and events of the messages processed at intake, inside the connection's transaction."""
    rows, events = _processed_rows(new_messages, ids, now)
    if rows:
        _INSERT_DELIVERY_ROWS.run(connection, rows)
    _INSERT_EVENTS.run(connection, events)


def _source_file_row(source_file: SourceFile, message_count: int, read_at: datetime) -> dict:
    values = {
        "path": source_file.path,
        "sha256": source_file.sha256,
        "size": source_file.size,
        "read_at": read_at,
        "message_count": message_count,
    }
    return fit_text(source_files, values)


def _criteria(query: MessageQuery) -> list[sa.ColumnElement[bool]]:
    c = messages.c
    equal = (
        (c.control_id, query.control_id),
        (c.patient_id, query.patient_id),
        (c.sending_application, query.sending_application),
        (c.sending_facility, query.sending_facility),
        (c.status, query.status),
        (c.channel, query.channel),
        (c.listener, query.listener),
    )
    criteria = [column == value for column, value in equal if value is not None]
    if query.message_type is not None:
        parts = query.message_type.split("^")
        type_columns = (c.message_code, c.trigger_event, c.message_structure)
        criteria += [column == part for column, part in zip(type_columns, parts) if part]
    if query.since is not None:
        criteria.append(c.received_at >= query.since)
    if query.until is not None:
        criteria.append(c.received_at < query.until)
    return criteria


class MessageRepository:
    """Blocking reads and writes of stored messages, returning plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock
        self._insert = _MessageInsert(engine.dialect)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the repository uses."""
        return self._engine

    def insert(self, new_messages: Sequence[NewMessage], source_file: SourceFile | None = None) -> list[int]:
        """Store the messages (and the record of the file they came from) in one transaction; returns their ids in order."""
        [ids] = self.insert_groups([(new_messages, source_file)])
        return ids

    def insert_groups(
        self,
        groups: Sequence[tuple[Sequence[NewMessage], SourceFile | None]],
        *,
        connection: sa.Connection | None = None,
    ) -> list[list[int]]:
        """Store several groups of messages, each with its optional source file, in one transaction; the ids of each group.

        ``connection`` is one its caller keeps (the writer thread does) and that is in no
        transaction; without it one is taken from the pool for the call.
        """
        every = [m for new_messages, _ in groups for m in new_messages]
        try:
            rows = [self._insert.values(m) for m in every]
        except ValueError as error:  # e.g. a naive received_at: a caller's bug, never a lock
            raise StoreError(f"storing messages failed: {error}") from error
        read_at = self._clock()
        files = [
            _source_file_row(source_file, len(new_messages), read_at)
            for new_messages, source_file in groups
            if source_file is not None
        ]
        if not rows and not files:
            return [[] for _ in groups]
        processed = any(m.deliveries is not None for m in every)
        with store_errors("storing messages"), contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(self._engine.connect())
            if rows and not files and not self._insert.sqlite and self._insert.fits_one_statement(rows):
                return self._split(
                    groups, self._insert.run_alone(connection, rows, every if processed else (), read_at)
                )
            # TRANSACTION: every message and source file record given, with the deliveries and
            # events of those processed at intake, committed together or not at all (one group
            # commit): a file is never recorded without its messages, nor they without it, and a
            # message is never stored processed without its deliveries.
            with connection.begin():
                ids = self._insert.run(connection, rows) if rows else []
                if processed:
                    _record_processed(connection, every, ids, read_at)
                if files:
                    connection.execute(sa.insert(source_files), files)
        return self._split(groups, ids)

    @staticmethod
    def _split(
        groups: Sequence[tuple[Sequence[NewMessage], SourceFile | None]], ids: list[int]
    ) -> list[list[int]]:
        """The ids of each group, from the ids of all their messages in order."""
        result, start = [], 0
        for new_messages, _ in groups:
            result.append(ids[start : start + len(new_messages)])
            start += len(new_messages)
        return result

    def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Summaries matching ``query``, newest (highest id) first, at most ``query.limit``."""
        statement = sa.select(*_SUMMARY_COLUMNS).where(*_criteria(query))
        if query.before_id is not None:
            statement = statement.where(messages.c.id < query.before_id)
        statement = statement.order_by(messages.c.id.desc()).limit(query.limit)
        with store_errors("searching messages"), self._engine.connect() as connection:
            return [MessageSummary(**row._mapping) for row in connection.execute(statement)]

    def get(self, message_id: int) -> StoredMessage | None:
        """One message with its content, deliveries and status history, or None when there is no such id."""
        message = sa.select(*_STORED_COLUMNS).where(messages.c.id == message_id)
        routed = (
            sa.select(*_DELIVERY_COLUMNS)
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)
        )
        events = (
            sa.select(*_EVENT_COLUMNS)
            .where(message_events.c.message_id == message_id)
            .order_by(message_events.c.at, message_events.c.id)
        )
        with store_errors("reading a message"), self._engine.connect() as connection:
            row = connection.execute(message).one_or_none()
            if row is None:
                return None
            delivery_rows = tuple(
                DeliverySummary(**delivery._mapping) for delivery in connection.execute(routed)
            )
            history = tuple(MessageEvent(**event._mapping) for event in connection.execute(events))
        return StoredMessage(**row._mapping, deliveries=delivery_rows, events=history)

    def count(self, query: MessageQuery | None = None) -> int:
        """How many messages match ``query`` (all of them without one); ``limit`` and ``before_id`` are ignored."""
        statement = sa.select(sa.func.count()).select_from(messages)
        if query is not None:
            statement = statement.where(*_criteria(query))
        with store_errors("counting messages"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    def find_duplicate(
        self, sending_application: str, sending_facility: str, control_id: str, *, since: datetime
    ) -> tuple[int, bytes | None] | None:
        """The newest message that was not rejected, from that sender with that control id, received at or after ``since``: (id, ACK bytes)."""
        require_aware(since, "since")
        # Compare with the values as they were stored: without NULs and cut to their columns.
        key = fit_text(
            messages,
            {
                "sending_application": sending_application,
                "sending_facility": sending_facility,
                "control_id": control_id,
            },
        )
        m = messages.c
        statement = (
            sa.select(m.id, m.ack)
            .where(
                *(m[name] == value for name, value in key.items()),
                m.received_at >= since,
                m.status != Status.REJECTED,
            )
            .order_by(m.id.desc())
            .limit(1)
        )
        with store_errors("looking for a duplicate"), self._engine.connect() as connection:
            row = connection.execute(statement).one_or_none()
        return None if row is None else (row.id, row.ack)

    def file_already_read(self, sha256: str) -> bool:
        """Whether a file with these contents (hex SHA-256) was stored before."""
        statement = sa.select(sa.exists().where(source_files.c.sha256 == sha256))
        with store_errors("looking up a source file"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()


@dataclass(slots=True)
class _PendingAdd:
    """An add() waiting for the writer; adds next to each other in the queue share one transaction."""

    messages: tuple[NewMessage, ...]
    source_file: SourceFile | None
    deferred: defer.Deferred


@dataclass(slots=True)
class _PendingCall:
    """Any other write waiting for the writer: ``function(*args, **kwargs)`` alone, in queue order."""

    function: Callable[..., Any]
    args: tuple
    kwargs: dict
    deferred: defer.Deferred


class _KeptConnection:
    """One connection a thread keeps between transactions, set up once; dropped (and made anew) after any error."""

    def __init__(self, engine: sa.Engine, pragmas: Sequence[str] = ()):
        self._engine = engine
        self._pragmas = pragmas
        self._connection: sa.Connection | None = None

    def get(self) -> sa.Connection:
        if self._connection is None:
            with store_errors("connecting to the store"):
                connection = self._engine.connect()
                try:
                    cursor = connection.connection.driver_connection.cursor()
                    for pragma in self._pragmas:  # connection settings, outside any transaction
                        cursor.execute(pragma)
                    cursor.close()
                except BaseException:
                    connection.invalidate()
                    connection.close()
                    raise
            self._connection = connection
        return self._connection

    def drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                # Never back into the pool: it may be broken, or carry the pragmas set above.
                connection.invalidate()
                connection.close()
            except Exception:  # it is being thrown away; a dead connection may fail to close
                log.debug("closing a kept store connection failed")


class _Lane:
    """A writer thread's queue and kept connection: it runs what is queued in order, one transaction after another."""

    def __init__(self, name: str, connection: _KeptConnection):
        self.name = name
        self.pending: collections.deque[_PendingAdd | _PendingCall] = collections.deque()
        self.wakeup = threading.Condition()
        self.connection = connection


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class MessageStore:
    """The engine's store: every write on one thread, in order (adds group-committed), reads on a pool, results as Deferreds."""

    def __init__(
        self,
        url: str,
        *,
        reactor,
        durability: str = "process",
        lock_timeout: float = 5.0,
        max_batch: int = 500,
        read_threads: int = 4,
        clock: Callable[[], datetime] = utc_now,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if read_threads < 1:
            raise ValueError(f"read_threads must be at least 1, not {read_threads}")
        self._url = url
        self._reactor = reactor
        self._durability = durability
        self._lock_timeout = lock_timeout
        self._max_batch = max_batch
        self._read_threads = read_threads
        self._clock = clock
        self._state = _State.NEW
        self._stop_waiters: list[defer.Deferred] = []
        self._repository: MessageRepository | None = None
        self._queues: QueueRepository | None = None
        self._configs: ConfigRepository | None = None
        self._reads: ThreadPool | None = None
        self._writer: _Lane | None = None  # every call, and the adds when there is no _adds lane
        self._adds: _Lane | None = None  # PostgreSQL: the adds, on a thread of their own beside the calls
        self._lanes_running = 0
        self._inline_connection: _KeptConnection | None = (
            None  # the reactor thread's, for adds committed inline
        )
        self._inline_group: list[_PendingAdd] = []  # adds of this reactor turn, committed at its end
        self._inline_flush = None  # the pending call that commits them
        self._inline_since = 0.0  # when the group's first add was asked (reactor seconds)
        self._inline_waiting = False  # whether _inline_flush is a wait for idle senders (else: end of turn)
        self._idle_senders: Callable[[], int] = lambda: 0
        self._inline_commits = 0  # since the writer last checkpointed the WAL
        self._last_inline_commit = 0.0  # time.monotonic() of the last one
        # Held by whichever thread is in a write transaction, so the reactor never waits for the writer
        # (SQLite, inline adds; any other store has nothing to coordinate, see start()).
        self._transaction_lock = threading.Lock()

    @property
    def repository(self) -> MessageRepository:
        """The blocking message repository underneath (for threads and tools); exists once started."""
        if self._repository is None:
            raise StoreError("the message store has not been started")
        return self._repository

    @property
    def queues(self) -> QueueRepository:
        """The blocking queue repository underneath (for threads and tools); exists once started."""
        if self._queues is None:
            raise StoreError("the message store has not been started")
        return self._queues

    @property
    def configs(self) -> ConfigRepository:
        """The blocking config history repository underneath (for threads and tools); exists once started."""
        if self._configs is None:
            raise StoreError("the message store has not been started")
        return self._configs

    def start(self) -> None:
        """Connect, upgrade the schema to head and start the threads; blocks while migrating, so call it at startup."""
        if self._state is not _State.NEW:
            raise StoreError(f"the message store cannot start: it is {self._state.value}")
        # Every reader may hold a connection at once, and the writers three: one kept per lane, one for calls.
        engine = create_engine_for(
            self._url,
            durability=self._durability,
            lock_timeout=self._lock_timeout,
            pool_size=self._read_threads + 3,
        )
        try:
            upgrade(engine)
        except StoreError:
            engine.dispose()
            raise
        self._repository = MessageRepository(engine, clock=self._clock)
        self._queues = QueueRepository(engine, clock=self._clock)
        self._configs = ConfigRepository(engine)
        self._reads = ThreadPool(minthreads=0, maxthreads=self._read_threads, name="hl7engine-store-read")
        self._reads.start()
        self._writer = _Lane("hl7engine-store-writer", _KeptConnection(engine))
        lanes = [self._writer]
        if engine.dialect.name == "sqlite":
            if self._durability == "process":
                # No waiting on the reactor thread: a busy database sends the adds to the writer at once.
                # The WAL is checkpointed by the writer thread, so no commit here ever pays for copying it.
                self._inline_connection = _KeptConnection(
                    engine, ("PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0")
                )
        else:
            # PostgreSQL takes concurrent writers: a message's commit (and its sender's ACK) does not
            # wait behind the runners' and dispatchers' writes, which need not come before it (a
            # message is processed at intake only once the writes of its channel's runner are done).
            self._adds = _Lane("hl7engine-store-adds", _KeptConnection(engine))
            lanes.append(self._adds)
        if self._inline_connection is None:
            self._transaction_lock = contextlib.nullcontext()
        self._state = _State.RUNNING
        self._lanes_running = len(lanes)
        for lane in lanes:
            threading.Thread(
                target=self._write_until_stopped, args=(lane,), name=lane.name, daemon=True
            ).start()

    def wait_for_senders(self, idle_senders: Callable[[], int]) -> None:
        """Let inline groups wait (at most ``GROUP_WAIT_SECONDS``) for senders that are connected but have nothing in flight.

        ``idle_senders()`` says how many such senders there are right now. Each commit costs the
        same for one message as for eight (the pages of every index are written again), so when
        connected senders are about to send their next message, the group waits for them; once
        every connected sender is waiting for the store, it commits. With one sender, or with
        none idle, nothing ever waits.
        """
        self._idle_senders = idle_senders

    def stop(self) -> defer.Deferred:
        """Commit every write already asked for, then stop the threads; fires with None once done. Idempotent."""
        if self._state is _State.NEW:
            self._state = _State.STOPPED
        if self._state is _State.STOPPED:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._stop_waiters.append(waiter)
        if self._state is _State.RUNNING:
            self._hand_over_inline()
            self._state = _State.STOPPING
            for lane in (self._writer, self._adds):
                if lane is not None:
                    with lane.wakeup:
                        lane.wakeup.notify()
        return waiter

    # Writes: each goes to the writer thread and fires after COMMIT.

    def add(
        self, new_messages: Sequence[NewMessage], source_file: SourceFile | None = None
    ) -> defer.Deferred:
        """Store the messages (and the record of their source file) in one transaction; fires with their ids after COMMIT."""
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        batch = tuple(new_messages)
        if not batch and source_file is None:
            return defer.succeed([])
        pending = _PendingAdd(batch, source_file, defer.Deferred())
        if self._inline_connection is None or source_file is not None:
            self._hand_over_inline()  # adds are committed in the order asked
            return self._enqueue(pending)
        if not self._inline_group:
            self._inline_since = self._reactor.seconds()
        self._inline_group.append(pending)
        if self._inline_flush is None:
            # callLater(0) runs after every connection that was readable in this turn has been read.
            self._inline_flush = self._reactor.callLater(0, self._commit_inline)
        elif self._inline_waiting and not self._idle_senders():
            # The group was waiting for senders, and this add was the last of them.
            self._inline_waiting = False
            self._inline_flush.reset(0)
        return pending.deferred

    def record_processing(self, results: Sequence[ProcessingResult]) -> defer.Deferred:
        """Fires with QueueRepository.record_processing(results): the new delivery ids."""
        return self._call(QueueRepository.record_processing, self._queues, tuple(results))

    def record_attempts(self, results: Sequence[AttemptResult]) -> defer.Deferred:
        """Fires with None once QueueRepository.record_attempts(results) committed."""
        return self._call(QueueRepository.record_attempts, self._queues, tuple(results))

    def resend(self, message_ids: Sequence[int], *, destination: str | None = None) -> defer.Deferred:
        """Fires with QueueRepository.resend(message_ids, destination=destination): the new delivery ids."""
        return self._call(QueueRepository.resend, self._queues, tuple(message_ids), destination=destination)

    def reprocess(self, message_ids: Sequence[int]) -> defer.Deferred:
        """Fires with QueueRepository.reprocess(message_ids): how many messages go back to RECEIVED."""
        return self._call(QueueRepository.reprocess, self._queues, tuple(message_ids))

    def record_config(
        self, *, applied_at: datetime, source: str, content: str, sha256: str, changes: str
    ) -> defer.Deferred:
        """Fires with ConfigRepository.record_config(...): the record's id."""
        return self._call(
            ConfigRepository.record_config,
            self._configs,
            applied_at=applied_at,
            source=source,
            content=content,
            sha256=sha256,
            changes=changes,
        )

    # Reads: each runs on the read pool.

    def search(self, query: MessageQuery) -> defer.Deferred:
        """Fires with MessageRepository.search(query)."""
        return self._read(MessageRepository.search, self._repository, query)

    def get(self, message_id: int) -> defer.Deferred:
        """Fires with MessageRepository.get(message_id)."""
        return self._read(MessageRepository.get, self._repository, message_id)

    def count(self, query: MessageQuery | None = None) -> defer.Deferred:
        """Fires with MessageRepository.count(query)."""
        return self._read(MessageRepository.count, self._repository, query)

    def find_duplicate(
        self, sending_application: str, sending_facility: str, control_id: str, *, since: datetime
    ) -> defer.Deferred:
        """Fires with MessageRepository.find_duplicate(...): (id, ACK bytes) or None."""
        return self._read(
            MessageRepository.find_duplicate,
            self._repository,
            sending_application,
            sending_facility,
            control_id,
            since=since,
        )

    def file_already_read(self, sha256: str) -> defer.Deferred:
        """Fires with MessageRepository.file_already_read(sha256)."""
        return self._read(MessageRepository.file_already_read, self._repository, sha256)

    def pending_for_processing(self, channel: str, *, after_id: int = 0, limit: int = 500) -> defer.Deferred:
        """Fires with QueueRepository.pending_for_processing(...): ReceivedMessage values, oldest first."""
        return self._read(
            QueueRepository.pending_for_processing, self._queues, channel, after_id=after_id, limit=limit
        )

    def due_deliveries(
        self, channel: str, destination: str, *, now: datetime, limit: int, head_only: bool
    ) -> defer.Deferred:
        """Fires with QueueRepository.due_deliveries(...): Delivery values in queue order."""
        return self._read(
            QueueRepository.due_deliveries,
            self._queues,
            channel,
            destination,
            now=now,
            limit=limit,
            head_only=head_only,
        )

    def next_due_at(self, channel: str, destination: str, *, head_only: bool = False) -> defer.Deferred:
        """Fires with QueueRepository.next_due_at(...): a datetime or None."""
        return self._read(
            QueueRepository.next_due_at, self._queues, channel, destination, head_only=head_only
        )

    def queue_depth(self, channel: str, destination: str) -> defer.Deferred:
        """Fires with QueueRepository.queue_depth(channel, destination)."""
        return self._read(QueueRepository.queue_depth, self._queues, channel, destination)

    def queue_depths(self) -> defer.Deferred:
        """Fires with QueueRepository.queue_depths(): {(channel, destination): depth}."""
        return self._read(QueueRepository.queue_depths, self._queues)

    def config_history(self, limit: int = 20) -> defer.Deferred:
        """Fires with ConfigRepository.config_history(limit): newest first."""
        return self._read(ConfigRepository.config_history, self._configs, limit)

    def write(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the single writer thread, in order with every other write.

        For stores beside the messages (the patient record): SQLite has one writer at a time, so
        every write of the engine goes through this thread. Errors arrive as StoreError.
        """
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        self._hand_over_inline()  # writes run in the order asked: adds of this turn go first
        return self._enqueue(_PendingCall(function, args, kwargs, defer.Deferred()))

    def read(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the read pool; errors arrive as StoreError."""
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        d = deferToThreadPool(self._reactor, self._reads, function, *args, **kwargs)
        return d.addErrback(
            lambda failure: (
                failure
                if failure.check(StoreError)
                else Failure(_as_store_error(failure.value, function.__name__))
            )
        )

    def _read(self, method: Callable[..., Any], repository, *args, **kwargs) -> defer.Deferred:
        # Once stopping, the pool may already be shut down and would silently drop the call.
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        return self.read(method, repository, *args, **kwargs)

    def _call(self, method: Callable[..., Any], repository, *args, **kwargs) -> defer.Deferred:
        """Run ``method(repository, *args, **kwargs)`` on the writer thread after every write asked for before it."""
        return self.write(method, repository, *args, **kwargs)

    # Inline adds: everything here runs on the reactor thread.

    def _commit_inline(self) -> None:
        """Commit the group's adds here and now if nothing else is writing; else hand them to the writer."""
        waited = self._reactor.seconds() - self._inline_since
        if waited < GROUP_WAIT_SECONDS and self._idle_senders():
            self._inline_flush = self._reactor.callLater(GROUP_WAIT_SECONDS - waited, self._commit_inline)
            self._inline_waiting = True
            return
        self._inline_flush, self._inline_waiting = None, False
        group, self._inline_group = collections.deque(self._inline_group), []
        while group:
            chunk = _take_adds(group, self._max_batch)
            if not self._commit_here(chunk):
                for pending in chunk + list(group):  # in order, behind whatever the writer has queued
                    self._enqueue(pending)
                return

    def _commit_here(self, group: list[_PendingAdd]) -> bool:
        """Commit the group on this thread and fire its Deferreds; False (nothing fired) when the writer must do it."""
        if not self._transaction_lock.acquire(blocking=False):
            return False
        try:
            ids = self._repository.insert_groups(
                [(pending.messages, None) for pending in group], connection=self._inline_connection.get()
            )
        except Exception:
            # Locked by another process, or anything else: the writer retries with the full lock
            # timeout and reports what is still wrong then, exactly as for its own groups.
            self._inline_connection.drop()
            return False
        finally:
            self._transaction_lock.release()
        self._inline_commits += 1
        self._last_inline_commit = time.monotonic()
        _fire([(pending.deferred.callback, pending_ids) for pending, pending_ids in zip(group, ids)])
        return True

    def _hand_over_inline(self) -> None:
        """The adds waiting for the end of the turn go to the writer (stopping, or an add that only the writer can do)."""
        if self._inline_flush is not None:
            self._inline_flush.cancel()
            self._inline_flush, self._inline_waiting = None, False
        group, self._inline_group = self._inline_group, []
        for pending in group:
            self._enqueue(pending)

    def _enqueue(self, pending: _PendingAdd | _PendingCall) -> defer.Deferred:
        lane = self._adds if self._adds is not None and isinstance(pending, _PendingAdd) else self._writer
        with lane.wakeup:
            lane.pending.append(pending)
            lane.wakeup.notify()
        return pending.deferred

    # Everything below runs on the writer thread.

    def _write_until_stopped(self, lane: _Lane) -> None:
        try:
            while (work := self._next_work(lane)) is not None:
                if work is _CHECKPOINT:
                    self._checkpoint()
                elif isinstance(work, _PendingCall):
                    self._run_call(work)
                else:
                    self._write(work, lane)
            lane.connection.drop()
        finally:
            with self._writer.wakeup:
                self._lanes_running -= 1
                last = not self._lanes_running
            if last:
                self._close()

    def _close(self) -> None:
        """The last writer thread out closes the rest and tells the reactor."""
        try:
            self._reads.stop()  # runs the reads already queued, then joins the threads
            if self._inline_connection is not None:  # no add() commits inline once stopping
                self._inline_connection.drop()
            self._repository.engine.dispose()
        finally:
            self._reactor.callFromThread(self._stopped)

    def _next_work(self, lane: _Lane) -> _PendingCall | list[_PendingAdd] | object | None:
        """Wait for work: the next call alone, the adds at the head of the queue that fit in max_batch
        (at least one), _CHECKPOINT when due (_checkpoint_due); None to exit.

        The checkpoint is returned rather than run here: the reactor takes this lock to queue work.
        """
        with lane.wakeup:
            if self._checkpoint_due():
                return _CHECKPOINT
            while not lane.pending and self._state is _State.RUNNING:
                if not lane.wakeup.wait(_CHECKPOINT_SECONDS) and self._checkpoint_due():
                    return _CHECKPOINT
            if not lane.pending:
                return None
            if isinstance(lane.pending[0], _PendingCall):
                return lane.pending.popleft()
            return _take_adds(lane.pending, self._max_batch)

    def _checkpoint_due(self) -> bool:
        """Inline commits wrote to the WAL, and either none came for _CHECKPOINT_SECONDS or _CHECKPOINT_COMMITS of them did.

        Under steady load, then, a checkpoint (whose end holds inline commits off for a moment)
        comes about once a second, not every quarter of a second: a few senders' messages wait.
        """
        commits = self._inline_commits
        return commits >= _CHECKPOINT_COMMITS or (
            commits > 0 and time.monotonic() - self._last_inline_commit >= _CHECKPOINT_SECONDS
        )

    def _checkpoint(self) -> None:
        """Copy the WAL the inline commits wrote into the database file (PASSIVE: waiting for no one), so that the WAL starts over.

        The bulk is copied while inline commits go on. A WAL starts over (at its next commit) only
        once everything in it was copied, and under steady load inline commits always add some
        meanwhile (however complete the checkpoint says it was when it began): what they added is
        copied with them held off (they go to this thread's queue for that moment). Without that
        the WAL grew by some 100 MB a second under load, for as long as the load lasted.
        """
        self._inline_commits = 0
        try:
            # On the driver: a checkpoint is no transaction, and SQLAlchemy would begin (and commit) one.
            driver = self._writer.connection.get().connection.driver_connection
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
            with self._transaction_lock:
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        except Exception as error:  # the next idle moment tries again; a failing store shows in the writes
            self._writer.connection.drop()
            log.debug("checkpointing the store failed: {error}", error=str(error))

    def _run_call(self, call: _PendingCall) -> None:
        """Run one call in its own transaction(s) and fire its Deferred; never raises."""
        try:
            with self._transaction_lock:
                result = call.function(*call.args, **call.kwargs)
        except Exception as error:  # whatever happens, the writer lives on to serve the next write
            failure = _as_store_error(error, call.function.__name__)
            log.warn("store call {call} failed: {error}", call=call.function.__name__, error=str(failure))
            self._reactor.callFromThread(call.deferred.errback, failure)
            return
        self._reactor.callFromThread(call.deferred.callback, result)

    def _write(self, group: list[_PendingAdd], lane: _Lane) -> None:
        """Commit the group in one transaction and fire each add's Deferred; never raises."""
        try:
            with self._transaction_lock:
                ids = self._repository.insert_groups(
                    [(pending.messages, pending.source_file) for pending in group],
                    connection=lane.connection.get(),
                )
        except Exception as error:  # whatever happens, the writer lives on to serve the next group
            # The connection may be what failed (a restarted server): the next group takes a new one.
            lane.connection.drop()
            failure = _as_store_error(error, "storing messages")
            if len(group) > 1 and _may_be_one_add(failure):
                # One add's rows may be at fault: give every add its own transaction so the rest commit.
                for pending in group:
                    self._write([pending], lane)
                return
            log.warn(
                "storing {count} messages failed: {error}",
                count=sum(len(p.messages) for p in group),
                error=str(failure),
            )
            self._reactor.callFromThread(_fire, [(pending.deferred.errback, failure) for pending in group])
            return
        # One hand-off to the reactor per committed group, not one per add: each wakes the reactor.
        self._reactor.callFromThread(
            _fire, [(pending.deferred.callback, pending_ids) for pending, pending_ids in zip(group, ids)]
        )

    def _stopped(self) -> None:
        self._state = _State.STOPPED
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _take_adds(pending: collections.deque, max_batch: int) -> list[_PendingAdd]:
    """The adds at the head of ``pending`` (which starts with one) whose messages fit in max_batch together; at least one, never split.

    Stops at a call: adds never overtake a call queued before them, whose write may be what they rely on.
    """
    group = [pending.popleft()]
    size = len(group[0].messages)
    while pending and isinstance(pending[0], _PendingAdd) and size + len(pending[0].messages) <= max_batch:
        size += len(pending[0].messages)
        group.append(pending.popleft())
    return group


# What _next_work returns when the writer should checkpoint the WAL.
_CHECKPOINT = object()

# How long an inline group waits at most for connected senders to join it (see wait_for_senders).
GROUP_WAIT_SECONDS = 0.002

# The writer checkpoints the WAL that inline commits wrote once none came for this long...
_CHECKPOINT_SECONDS = 0.25
# ... or after this many of them, however busy.
_CHECKPOINT_COMMITS = 500


def _fire(calls: list) -> None:
    """Fire Deferreds on the reactor thread, each on its own: one caller's error does not stop the others."""
    for fire, value in calls:
        try:
            fire(value)
        except Exception:
            log.failure("a store caller's callback failed")


def _as_store_error(error: BaseException, action: str) -> StoreError:
    """``error`` itself when it is a StoreError, else a StoreError caused by it (a bug or a bad argument, but the caller's Deferred must fail)."""
    if isinstance(error, StoreError):
        return error
    wrapped = StoreError(f"{action} failed: {error!r}")
    wrapped.__cause__ = error
    return wrapped


def _may_be_one_add(error: StoreError) -> bool:
    """Whether a failed group is worth retrying add by add: not when the database itself is locked or unreachable."""
    return not error.transient
