"""Channels in the store: processing results, the destination queues, resend and reprocess.

A channel's runner takes its RECEIVED messages in id order (``pending_for_processing``) and
records what its filters and transforms made of each one, with one delivery row per destination
(``record_processing``). A destination's queue is its QUEUED delivery rows in id order, which is
the order of receipt; its dispatcher takes what is due (``due_deliveries``) and records every
attempt (``record_attempts``). Retry policy (backoff, giving up) belongs to the dispatcher: the
store only records what it decided.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import operator
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from twisted.logger import Logger

from engine.model import (
    AttemptResult,
    Delivery,
    NewDelivery,
    Outcome,
    ProcessingResult,
    ReceivedMessage,
    Status,
    require_aware,
    roll_up,
    utc_now,
)
from engine.store.db import store_errors
from engine.store.schema import deliveries, fit_text, message_events, messages

log = Logger(namespace="engine.store")


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    """One delivery row of a stored message, for showing its history."""

    id: int
    destination: str
    status: str
    attempts: int
    sent_at: datetime | None
    response_code: str
    reason: str
    payload: bytes | None  # the encoded content (what is or was sent)
    response: bytes | None
    created_at: datetime
    next_attempt_at: datetime
    superseded_at: datetime | None  # set when a resend or reprocess replaced this row


_RECEIVED_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(ReceivedMessage))
_QUEUE_COLUMNS = tuple(
    deliveries.c[name]
    for name in (
        "id",
        "message_id",
        "channel",
        "destination",
        "control_id",
        "payload",
        "attempts",
        "created_at",
        "next_attempt_at",
    )
)
_INSERT_DELIVERIES = sa.insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)


class _Rows:
    """A DML statement run for many rows with one executemany, compiled once per dialect.

    SQLAlchemy builds a parameter set and calls a bind processor for every value of every row,
    which cost more than the rows themselves. Here each row is a dict keyed by column name (its
    bind is ``b_<column>``), each distinct timestamp is processed once per call (the rows of a
    batch share theirs), the statement's constants once per dialect, and the rows go to the
    driver (``on_driver``), so errors still come as SQLAlchemy's.

    An INSERT on SQLite goes as multi-row INSERTs instead: sqlite3's executemany steps the
    statement once per row, letting go of the GIL and taking it back each time, which under load
    (the reactor waiting for the GIL) stretches a write transaction that intake is waiting for.
    The rows go in chunks of a power of two (``sqlite_runs``), so a few statements serve every
    count (sqlite3 keeps each prepared). An UPDATE by id goes the same way, reading its rows from
    a VALUES list (``UPDATE ... FROM``): a dispatcher's 100 attempts were two executemany of 100
    steps each, in the write transaction intake waits behind.

    On PostgreSQL many rows go as one statement that reads them from arrays (``unnest``, one
    array per column): psycopg's executemany pipelines a statement per row, and the Python work
    of each (taken between the GIL and the reactor) made a dispatcher's 100 attempts cost tens of
    milliseconds. An INSERT keeps the order given (``WITH ORDINALITY ... ORDER BY``, ids follow
    it); an UPDATE of the same id twice in one call (two attempts of one delivery) goes row by
    row, as one statement would update that row once.
    """

    def __init__(self, statement: sa.UpdateBase):
        self._statement = statement
        self._prepared: dict[str, tuple] = {}
        self._many_rows: dict[int, str] = {}  # the statement of that many rows (SQLite)
        self._arrays: str | None = None  # the statement reading its rows from arrays (PostgreSQL)

    def run(self, connection: sa.Connection, rows: Sequence[dict]) -> None:
        """Run the statement once per row, in order, inside the connection's transaction."""
        dialect = connection.dialect
        prepared = self._prepared.get(dialect.name)
        if prepared is None:
            sql, names, fields = _prepare(self._statement, dialect)
            prepared = self._prepared[dialect.name] = (sql, names, fields, _values_of(fields))
        sql, names, fields, values_of = prepared
        times: dict[datetime, Any] = {}
        parameters = [values_of(row, times) for row in rows]
        if len(parameters) > 1 and self._one_each(fields, parameters):
            if dialect.name == "sqlite":
                self._sqlite_many(connection, sql, fields, parameters)
                return
            if dialect.name == "postgresql" and names is not None:
                self._from_arrays(connection, sql, names, parameters)
                return
        if names is not None:
            parameters = [dict(zip(names, values)) for values in parameters]
        # One row is a plain execute: psycopg runs an executemany as a pipeline, which costs more for one.
        on_driver(
            connection, sql, parameters[0] if len(parameters) == 1 else parameters, many=len(parameters) > 1
        )

    def _one_each(self, fields: tuple, parameters: list[tuple]) -> bool:
        """Whether one statement may take these rows: always for an INSERT; for an UPDATE, when no id comes twice."""
        if isinstance(self._statement, sa.Insert):
            return True
        index = [key for key, _, _ in fields].index("id")
        return len({values[index] for values in parameters}) == len(parameters)

    def _from_arrays(
        self, connection: sa.Connection, sql: str, names: list[str], parameters: list[tuple]
    ) -> None:
        if self._arrays is None:
            self._arrays = _arrays_sql(self._statement, sql, names, connection.dialect)
        columns = list(zip(*parameters))
        # A bind of every row (b_...) becomes its column's array; a constant of the statement stays one value.
        connection.exec_driver_sql(
            self._arrays,
            {
                name: list(column) if name.startswith("b_") else column[0]
                for name, column in zip(names, columns)
            },
        )

    def _sqlite_many(
        self, connection: sa.Connection, sql: str, fields: tuple, parameters: list[tuple]
    ) -> None:
        """SQLite: the rows in a few statements of many rows each (chunks of a power of two, each statement kept prepared by sqlite3).

        An INSERT takes a multi-row VALUES list; an UPDATE by id reads its rows from one
        (``WITH v(...) AS (VALUES ...) UPDATE ... FROM v``, SQLite 3.33 and later).
        """
        update = isinstance(self._statement, sa.Update)
        if update and sqlite3.sqlite_version_info < (3, 33):
            on_driver(connection, sql, parameters, many=True)
            return
        bound = [index for index, (key, _, _) in enumerate(fields) if key is not None]
        constants = tuple(constant for key, _, constant in fields if key is None)
        for start, count in sqlite_runs(len(parameters)):
            statement = self._many_rows.get(count)
            if statement is None:
                statement = self._many_rows[count] = (
                    _sqlite_update_many(sql, fields, count, connection.dialect)
                    if update
                    else _sqlite_insert_many(sql, count)
                )
            chunk = parameters[start : start + count]
            if update:  # the rows' values in the CTE first, then the statement's own constants
                values = tuple(values[index] for values in chunk for index in bound) + constants
            else:
                values = tuple(value for values in chunk for value in values)
            on_driver(connection, statement, values)


def on_driver(
    connection: sa.Connection, sql: str, parameters: Any, *, many: bool = False, fetch: bool = False
) -> list | None:
    """Run ``sql`` inside the connection's transaction (``many``: once per parameter set); its rows when ``fetch``.

    SQLite: on the driver's own cursor. SQLAlchemy's execution context around it (``exec_driver_sql``)
    cost ~20 us a statement, and intake's transaction of one message processed at intake has
    three; its errors still come as SQLAlchemy would raise them. PostgreSQL: ``exec_driver_sql``.
    """
    dialect = connection.dialect
    if dialect.name != "sqlite":
        result = connection.exec_driver_sql(sql, parameters)
        return result.fetchall() if fetch else None
    cursor = connection.connection.driver_connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return cursor.fetchall() if fetch else None
    except dialect.dbapi.Error as error:
        raise sa_exc.DBAPIError.instance(
            sql, None, error, dialect.dbapi.Error, hide_parameters=True, dialect=dialect
        ) from error
    finally:
        cursor.close()


def _sqlite_insert_many(sql: str, count: int) -> str:
    """SQLite: the one-row INSERT ``sql`` as an INSERT of ``count`` rows."""
    head, values, row = sql.rpartition(" VALUES ")
    return f"{head}{values}{', '.join([row] * count)}"


def _sqlite_update_many(sql: str, fields: tuple, count: int, dialect: sa.Dialect) -> str:
    """SQLite: the one-row UPDATE by id ``sql`` (``?`` binds, ``fields`` as _prepare gives them) as one UPDATE of ``count`` rows read from a VALUES list."""
    quote = dialect.identifier_preparer.quote
    pieces = sql.split("?")
    if len(pieces) != len(fields) + 1 or " WHERE " not in sql:
        raise ValueError(f"not an UPDATE by id with one ? per bind: {sql}")
    text = pieces[0] + "".join(
        ("?" if key is None else f"v.{quote(key)}") + piece for (key, _, _), piece in zip(fields, pieces[1:])
    )
    keys = [quote(key) for key, _, _ in fields if key is not None]
    row = f"({', '.join(['?'] * len(keys))})"
    head, where, tail = text.partition(" WHERE ")
    return f"WITH v({', '.join(keys)}) AS (VALUES {', '.join([row] * count)}) {head} FROM v{where}{tail}"


def column_type(column: sa.Column, dialect: sa.Dialect) -> str:
    """PostgreSQL: the type of the column's values, without a length (values are fitted already; a cast to varchar(n) would cut)."""
    return re.sub(r"[(][^)]*[)]$", "", column.type.compile(dialect=dialect))


def _typed_columns(
    table: sa.Table, columns: Sequence[str], dialect: sa.Dialect, positions: bool
) -> tuple[list[str], list[str]]:
    """PostgreSQL: the type (column_type) and quoted name of each column, after ``int`` and ``k`` when ``positions``."""
    quote = dialect.identifier_preparer.quote
    types = [column_type(table.c[name], dialect) for name in columns]
    names = [quote(name) for name in columns]
    if positions:
        types.insert(0, "int")
        names.insert(0, "k")
    return types, names


def unnest_rows(
    table: sa.Table,
    columns: Sequence[str],
    dialect: sa.Dialect,
    *,
    named: bool = False,
    positions: bool = False,
) -> str:
    """PostgreSQL: ``unnest(<one array a column>) WITH ORDINALITY AS v(<columns>, i)``, rows read from arrays, ``v.i`` their order.

    The arrays are binds: positional ``%b``, or ``%(b_<column>)b`` when ``named``. With
    ``positions`` a first array (``v.k``) gives each row's position among the statement's messages.
    Arrays go to the server in binary: psycopg's text format escapes every element in Python,
    ~13 times the cost (measured: 8 messages' columns, 208 us against 16 us).
    """
    types, names = _typed_columns(table, columns, dialect, positions)
    binds = [*(["%b"] if positions else []), *(f"%(b_{name})b" if named else "%b" for name in columns)]
    arrays = [f"{bind}::{type_}[]" for bind, type_ in zip(binds, types)]
    return f"unnest({', '.join(arrays)}) WITH ORDINALITY AS v({', '.join(names)}, i)"


def values_list(
    table: sa.Table,
    columns: Sequence[str],
    dialect: sa.Dialect,
    count: int,
    numbers: Iterator[int],
    *,
    positions: bool = False,
) -> str:
    """PostgreSQL: ``(VALUES ($1::type, ..., 1), ...) AS v(<columns>, i)``, ``count`` rows of placeholders numbered from ``numbers``, ``v.i`` their order.

    For a RawCursor (``$n`` placeholders). Each placeholder is cast to its column's type: a NULL
    or a text in a VALUES list has none. ``positions`` as for unnest_rows.
    """
    types, names = _typed_columns(table, columns, dialect, positions)
    rows = (
        f"({', '.join(f'${next(numbers)}::{type_}' for type_ in types)}, {i})" for i in range(1, count + 1)
    )
    return f"(VALUES {', '.join(rows)}) AS v({', '.join(names)}, i)"


def _arrays_sql(statement: sa.UpdateBase, sql: str, names: list[str], dialect: sa.Dialect) -> str:
    """PostgreSQL: ``sql`` (one row's INSERT or UPDATE by id, binds ``%(b_<column>)s``) as one statement of every row, each bind an array.

    ``UPDATE t SET c = v.c ... FROM unnest(%(b_c)b::type[], ...) AS v(c, ...) WHERE t.id = v.id``;
    ``INSERT INTO t (...) SELECT v.c, ... FROM unnest(...) WITH ORDINALITY AS v(c, ..., i) ORDER BY v.i``.
    """
    quote = dialect.identifier_preparer.quote
    bound = [name[2:] for name in names if name.startswith("b_")]
    for column in bound:
        sql = sql.replace(f"%(b_{column})s", f"v.{quote(column)}")
    source = unnest_rows(statement.table, bound, dialect, named=True)
    sql = sql.partition(" RETURNING ")[0]  # nothing reads the ids of these rows
    if isinstance(statement, sa.Insert):
        head, _, row = sql.rpartition(" VALUES (")
        return f"{head} SELECT {row[:-1]} FROM {source} ORDER BY v.i"
    head, where, tail = sql.partition(" WHERE ")
    if not where or "%(b_" in sql:
        raise ValueError(f"not an UPDATE by id of bound values: {sql}")
    return f"{head} FROM {source}{where}{tail}"


def sqlite_runs(total: int, most: int = 128) -> Iterator[tuple[int, int]]:
    """(start, count) of the runs of rows a multi-row INSERT of ``total`` rows goes in on SQLite.

    Each count is a power of two up to ``most``, so a few statements (sqlite3 keeps each prepared)
    serve every number of rows, and ``most`` rows of any table stay far below SQLite's 32,766 parameters.
    """
    start = 0
    while start < total:
        count = min(most, 1 << ((total - start).bit_length() - 1))
        yield start, count
        start += count


def _prepare(statement: sa.Executable, dialect: sa.Dialect, lists: dict[str, int] | None = None) -> tuple:
    """The statement's SQL for the dialect, its bind names (None when positional), and for each bind: its key (None for a constant), bind processor and constant value.

    ``lists`` gives each IN-list bind (``b_ids``) a length: it is rendered as that many binds (``b_ids_1``, ``b_ids_2``, ...).
    """
    compiled = statement.compile(dialect=dialect)
    sql, positions, parameters, list_of = (
        compiled.string,
        compiled.positiontup,
        compiled.bind_names.values(),
        {},
    )
    if lists:
        expanded = compiled.construct_expanded_state({name: [0] * length for name, length in lists.items()})
        sql, positions, parameters = expanded.statement, expanded.positiontup, expanded.parameters
        list_of = {
            element: name for name, elements in expanded.parameter_expansion.items() for element in elements
        }
    names = list(positions) if compiled.positional else sorted(set(parameters))
    fields = []
    for name in names:
        bind = compiled.binds[list_of.get(name, name)]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name.startswith("b_"):
            fields.append((name[2:], processor, None))
        else:  # a constant of the statement (a status, the 1 of attempts + 1, an OFFSET)
            fields.append((None, None, bind.value if processor is None else processor(bind.value)))
    return sql, None if compiled.positional else names, tuple(fields)


class _Select:
    """A SELECT run on the driver, compiled once per dialect; its rows are plain tuples.

    For the reads of every dispatcher pass (its due run, what its attempts touched): SQLAlchemy's
    result machinery (a Row per row, a processor call per value, an IN list expanded on every
    call) cost more than the read itself. Here only the columns whose type converts on this dialect (timestamps) are
    converted, each distinct value once per call (the rows of a queue share their timestamps).
    Binds are named ``b_<key>`` as in _Rows. A ``listed`` key is an IN list: the statement is
    compiled once per power-of-two length, the list padded with its last value (which matches
    nothing more), so a few compilations serve every length.
    """

    def __init__(self, statement: sa.Select, *, listed: str | None = None):
        self._statement = statement
        self._listed = listed
        self._prepared: dict[tuple[str, int], tuple] = {}

    def rows(self, connection: sa.Connection, parameters: dict) -> list[tuple]:
        """The rows for these parameters (keyed without the ``b_``; a non-empty sequence for ``listed``), values as the column types give them."""
        dialect = connection.dialect
        size = 0
        if self._listed is not None:
            listed = list(parameters[self._listed])
            if not listed:
                raise ValueError(f"{self._listed}: an IN list needs at least one value")
            size = 1 << (len(listed) - 1).bit_length()
            listed += listed[-1:] * (size - len(listed))
            parameters = {
                **parameters,
                **{f"{self._listed}_{n}": value for n, value in enumerate(listed, start=1)},
            }
        prepared = self._prepared.get((dialect.name, size))
        if prepared is None:
            prepared = self._prepared[(dialect.name, size)] = self._prepare(dialect, size)
        sql, names, values_of, converters = prepared
        values = values_of(parameters, {})
        rows = on_driver(connection, sql, values if names is None else dict(zip(names, values)), fetch=True)
        if not converters:
            return [tuple(row) for row in rows]
        converted: list[dict] = [{} for _ in converters]
        result = []
        for row in rows:
            row = list(row)
            for (index, processor), seen in zip(converters, converted):
                raw = row[index]
                if raw is not None:
                    value = seen.get(raw)
                    if value is None:
                        value = seen[raw] = processor(raw)
                    row[index] = value
            result.append(tuple(row))
        return result

    def _prepare(self, dialect: sa.Dialect, size: int) -> tuple:
        sql, names, fields = _prepare(
            self._statement, dialect, None if self._listed is None else {f"b_{self._listed}": size}
        )
        converters = tuple(
            (index, processor)
            for index, column in enumerate(self._statement.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        )
        return sql, names, _values_of(fields), converters


def _values_of(fields: tuple) -> Callable[[dict, dict], tuple]:
    """A function of (row, times) giving the row's values for ``_prepare``'s fields; ``times`` keeps each timestamp's processed value for the call."""
    keys = [key for key, _, _ in fields if key is not None]
    picked = operator.itemgetter(*keys) if len(keys) > 1 else lambda row: tuple(row[key] for key in keys)
    constants = tuple((index, constant) for index, (key, _, constant) in enumerate(fields) if key is None)
    processed = tuple(
        (index, processor)
        for index, (key, processor, _) in enumerate(fields)
        if key is not None and processor is not None
    )

    def values_of(row: dict, times: dict) -> tuple:
        values = list(picked(row))
        for index, constant in constants:
            values.insert(index, constant)
        for index, processor in processed:
            value = values[index]
            if value is not None:
                if isinstance(value, datetime):
                    if value not in times:
                        times[value] = processor(value)
                    values[index] = times[value]
                else:
                    values[index] = processor(value)
        return tuple(values)

    return values_of


def _binds(table: sa.Table, *names: str) -> dict:
    """``{column: :b_column}`` for each name: the values of a _Rows statement (a bind may not share its column's name)."""
    return {name: sa.bindparam(f"b_{name}", type_=table.c[name].type) for name in names}


def _by_id(table: sa.Table, *criteria: sa.ColumnElement[bool]) -> sa.Update:
    """An UPDATE of the row whose id is the row's ``id``."""
    return sa.update(table).where(table.c.id == sa.bindparam("b_id", type_=table.c.id.type), *criteria)


def _fit(column: sa.Column, value: str) -> str:
    """``value`` as fit_text stores it in ``column``; most values fit already and are returned as they are."""
    length = column.type.length
    if "\x00" in value or (length is not None and len(value) > length):
        return fit_text(column.table, {column.name: value})[column.name]
    return value


_EVENT_STATUS, _EVENT_DETAIL, _EVENT_DESTINATION = (
    message_events.c.status,
    message_events.c.detail,
    message_events.c.destination,
)
_DELIVERY_REASON, _DELIVERY_RESPONSE_CODE, _MESSAGE_ERROR = (
    deliveries.c.reason,
    deliveries.c.response_code,
    messages.c.error,
)

# The claim (the WHERE on status): every still-RECEIVED message of a batch at once, locked until commit.
_CLAIM = (
    sa.update(messages)
    .where(messages.c.id.in_(sa.bindparam("ids", expanding=True)), messages.c.status == Status.RECEIVED)
    .values(status_at=sa.bindparam("now", type_=messages.c.status_at.type))
    .returning(messages.c.id, messages.c.channel)
)
_SET_RESULT = _Rows(_by_id(messages).values(_binds(messages, "status", "error", "transformed")))
_SETTLE = _Rows(
    _by_id(messages, messages.c.status == Status.QUEUED).values(
        _binds(messages, "status", "status_at", "error")
    )
)
_INSERT_EVENTS = _Rows(
    sa.insert(message_events).values(
        _binds(message_events, "message_id", "at", "status", "detail", "destination")
    )
)
# One UPDATE per outcome; every one counts the attempt and keeps the answer.
_ATTEMPT = ("updated_at", "reason", "response", "response_code")
_RECORD_ATTEMPT = {
    Outcome.SENT: _Rows(
        _by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, status=Status.SENT, **_binds(deliveries, *_ATTEMPT, "sent_at")
        )
    ),
    Outcome.ERROR: _Rows(
        _by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, status=Status.ERROR, **_binds(deliveries, *_ATTEMPT)
        )
    ),
    # RETRY leaves the status alone: a row superseded meanwhile stays out of its queue.
    Outcome.RETRY: _Rows(
        _by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, **_binds(deliveries, *_ATTEMPT, "next_attempt_at")
        )
    ),
}


def _event(message_id: int, at: datetime, status: str, detail: str, destination: str | None = None) -> dict:
    """A message_events row; ``destination`` None for a change of the message's own status."""
    fitted = None if destination is None else _fit(_EVENT_DESTINATION, destination)
    return {
        "message_id": message_id,
        "at": at,
        "status": _fit(_EVENT_STATUS, status),
        "detail": _fit(_EVENT_DETAIL, detail),
        "destination": fitted,
    }


def processing_rows(
    message_id: int,
    channel: str,
    status: str,
    reason: str,
    new_deliveries: Sequence[NewDelivery],
    now: datetime,
    rows: list[dict],
    events: list[dict],
) -> None:
    """Append what processing one message writes besides the message: a deliveries row per delivery, and the events (the message's, then each delivery's).

    Shared by record_processing and the store's insert of messages processed at intake, so both leave the same rows.
    """
    events.append(_event(message_id, now, status, reason))
    for delivery in new_deliveries:
        rows.append(
            _new_delivery_row(
                message_id,
                channel,
                delivery.destination,
                delivery.status,
                delivery.control_id,
                delivery.payload,
                delivery.reason,
                now,
            )
        )
        events.append(_event(message_id, now, delivery.status, delivery.reason, delivery.destination))


def _new_delivery_row(
    message_id: int,
    channel: str,
    destination: str,
    status: str,
    control_id: str,
    payload: bytes | None,
    reason: str,
    now: datetime,
) -> dict:
    return fit_text(
        deliveries,
        {
            "message_id": message_id,
            "channel": channel,
            "destination": destination,
            "status": status,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now,
            "sent_at": None,
            "superseded_at": None,
            "control_id": control_id,
            "payload": payload,
            "response": None,
            "response_code": "",
            "reason": reason,
        },
    )


def _queue(*columns: sa.ColumnElement) -> sa.Select:
    """The QUEUED rows of the queue named by the ``channel`` and ``destination`` keys, oldest first (the queue-head index)."""
    c = deliveries.c
    where = (
        c.channel == sa.bindparam("b_channel", type_=c.channel.type),
        c.destination == sa.bindparam("b_destination", type_=c.destination.type),
        c.status == Status.QUEUED,
    )
    return sa.select(*columns).where(*where).order_by(c.id)


# Read statements are built once: building and caching one per call cost more than running it.
_PENDING = (
    sa.select(*_RECEIVED_COLUMNS)
    .where(
        messages.c.channel == sa.bindparam("channel"),
        messages.c.status == Status.RECEIVED,
        messages.c.id > sa.bindparam("after_id"),
    )
    .order_by(messages.c.id)
    .limit(sa.bindparam("limit"))
)
_LIMIT = sa.bindparam("b_limit", type_=sa.Integer())
_HEAD_RUN = _Select(_queue(*_QUEUE_COLUMNS).limit(_LIMIT))
_DUE = _Select(
    _queue(*_QUEUE_COLUMNS)
    .where(deliveries.c.next_attempt_at <= sa.bindparam("b_now", type_=deliveries.c.next_attempt_at.type))
    .limit(_LIMIT)
)
_HEAD_DUE_AT = _Select(_queue(deliveries.c.next_attempt_at).limit(1))
_EARLIEST_DUE_AT = _Select(_queue(sa.func.min(deliveries.c.next_attempt_at)).order_by(None))
# After recording attempts: every delivery of the messages they touched, with the message's
# status, in one read (one round trip less on PostgreSQL). Run after the attempts' UPDATEs, in
# their transaction: on SQLite the write lock is held, on PostgreSQL FOR UPDATE locks the messages.
_TOUCHED = _Select(
    sa.select(
        deliveries.c.id,
        deliveries.c.message_id,
        deliveries.c.destination,
        deliveries.c.status,
        deliveries.c.reason,
        deliveries.c.attempts,
        deliveries.c.superseded_at.is_(None),
        messages.c.status,
    )
    .join_from(deliveries, messages, deliveries.c.message_id == messages.c.id)
    .where(
        deliveries.c.message_id.in_(
            sa.select(deliveries.c.message_id).where(
                deliveries.c.id.in_(sa.bindparam("b_ids", type_=deliveries.c.id.type, expanding=True))
            )
        )
    )
    .order_by(deliveries.c.id)
    .with_for_update(of=messages),
    listed="ids",
)


def _attempt_values(result: AttemptResult) -> dict:
    """The row of ``_RECORD_ATTEMPT[result.outcome]`` for one result."""
    return {
        "id": result.delivery_id,
        "updated_at": result.at,
        "sent_at": result.at,
        "reason": _fit(_DELIVERY_REASON, result.reason),
        "response": result.response,
        "response_code": _fit(_DELIVERY_RESPONSE_CODE, result.response_code),
        "next_attempt_at": result.next_attempt_at,
    }


def _attempt_detail(result: AttemptResult, attempt: int) -> str:
    """The event text of one attempt; RETRY says when the next one is due."""
    answer = f" (answer {result.response_code})" if result.response_code else ""
    if result.outcome == Outcome.SENT:
        return f"attempt {attempt} sent{answer}" + (f": {result.reason}" if result.reason else "")
    detail = f"attempt {attempt} failed{answer}: {result.reason}"
    if result.outcome == Outcome.RETRY:
        return f"{detail}; next at {result.next_attempt_at.isoformat()}"
    return detail


def _supersede(
    connection: sa.Connection, rows: Sequence[sa.Row], now: datetime, reason: str, events: list[dict]
) -> None:
    """Keep ``rows`` (id, message_id, destination, status) as history only; a still-QUEUED one leaves its queue as ERROR."""
    c = deliveries.c
    connection.execute(
        sa.update(deliveries).where(c.id.in_([r.id for r in rows])).values(superseded_at=now, updated_at=now)
    )
    queued = [r for r in rows if r.status == Status.QUEUED]
    if queued:
        connection.execute(
            sa.update(deliveries)
            .where(c.id.in_([r.id for r in queued]))
            .values(status=Status.ERROR, reason=reason)
        )
        events.extend(_event(r.message_id, now, Status.ERROR, reason, r.destination) for r in queued)


def _roll_up(
    connection: sa.Connection, settled: dict[int, datetime], touched: Sequence[tuple], events: list[dict]
) -> None:
    """Give each QUEUED message whose current deliveries are all final its status: ERROR if any is, else SENT if any is, else FILTERED.

    ``touched`` are the _TOUCHED rows: read under the lock, so the messages still QUEUED there are changed here.
    """
    by_message: dict[int, list[tuple[str, str, str]]] = {}
    for _, message_id, destination, status, reason, _, current, message_status in touched:
        if current and message_status == Status.QUEUED and message_id in settled:
            by_message.setdefault(message_id, []).append((destination, status, reason))
    changes = []
    for message_id, rows in by_message.items():
        status = roll_up(status for _, status, _ in rows)
        if status == Status.QUEUED:
            continue
        error = ""
        if status == Status.ERROR:
            error = detail = "; ".join(
                f"{destination}: {reason}" for destination, status_, reason in rows if status_ == Status.ERROR
            )
        elif status == Status.SENT:
            detail = "sent to " + ", ".join(d for d, status_, _ in rows if status_ == Status.SENT)
        else:
            detail = "filtered by every destination"
        at = settled[message_id]
        changes.append(
            {"id": message_id, "status": status, "status_at": at, "error": _fit(_MESSAGE_ERROR, error)}
        )
        events.append(_event(message_id, at, status, detail))
    if changes:
        _SETTLE.run(connection, changes)


class QueueRepository:
    """Blocking reads and writes of processing results and destination queues, returning plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def pending_for_processing(
        self, channel: str, *, after_id: int = 0, limit: int = 500
    ) -> list[ReceivedMessage]:
        """The channel's RECEIVED messages with ids above ``after_id``, oldest first, at most ``limit``."""
        _check_limit(limit)
        with store_errors("reading messages to process"), self._engine.connect() as connection:
            rows = connection.execute(_PENDING, {"channel": channel, "after_id": after_id, "limit": limit})
            return [ReceivedMessage(*row) for row in rows]

    def record_processing(self, results: Sequence[ProcessingResult]) -> list[int]:
        """Record each result with its deliveries and events in one transaction; returns the new delivery ids in order.

        Only messages still RECEIVED change: a result for a message processed meanwhile (a crash
        race, another engine) is skipped with its deliveries, so the list is shorter by those.
        """
        if not results:
            return []
        now = self._clock()
        rows: list[dict] = []
        events: list[dict] = []
        changes: list[dict] = []
        skipped: list[int] = []
        with store_errors("recording processing results"):
            # TRANSACTION: each message's new status and transformed content, its deliveries and
            # their events: a message is either fully processed or still RECEIVED.
            with self._engine.begin() as connection:
                # The claim: only messages still RECEIVED, once each (a concurrent or repeated claim gets nothing).
                claimed = {
                    row.id: row.channel
                    for row in connection.execute(
                        _CLAIM, {"ids": sorted({r.message_id for r in results}), "now": now}
                    )
                }
                for result in results:
                    if result.message_id not in claimed:
                        skipped.append(result.message_id)
                        continue
                    channel = claimed.pop(result.message_id)
                    changes.append(
                        {
                            "id": result.message_id,
                            "status": result.status,
                            "error": _fit(_MESSAGE_ERROR, result.reason),
                            "transformed": result.transformed,
                        }
                    )
                    processing_rows(
                        result.message_id,
                        channel,
                        result.status,
                        result.reason,
                        result.deliveries,
                        now,
                        rows,
                        events,
                    )
                if changes:
                    _SET_RESULT.run(connection, changes)
                ids = list(connection.execute(_INSERT_DELIVERIES, rows).scalars()) if rows else []
                if events:
                    _INSERT_EVENTS.run(connection, events)
        if skipped:
            log.warn(
                "skipped processing results of messages no longer RECEIVED: {message_ids}",
                message_ids=skipped,
            )
        return ids

    def due_deliveries(
        self, channel: str, destination: str, *, now: datetime, limit: int, head_only: bool
    ) -> list[Delivery]:
        """At most ``limit`` QUEUED deliveries due at ``now``, in queue order.

        With ``head_only`` they are the head of the queue and the rows right behind it, up to the
        first that is not due: nothing overtakes a row waiting for its retry (nothing at all while
        the head waits). Without it, every due row counts, wherever it stands.
        """
        require_aware(now, "now")
        _check_limit(limit)
        statement, parameters = (_HEAD_RUN, {}) if head_only else (_DUE, {"now": now})
        with store_errors("reading a destination queue"), self._engine.connect() as connection:
            rows = statement.rows(
                connection, {"channel": channel, "destination": destination, "limit": limit, **parameters}
            )
        due = []
        for (
            delivery_id,
            message_id,
            channel_,
            destination_,
            control_id,
            payload,
            attempts,
            created_at,
            next_attempt_at,
        ) in rows:
            if next_attempt_at > now:
                break
            due.append(
                Delivery(
                    delivery_id,
                    message_id,
                    channel_,
                    destination_,
                    control_id,
                    payload,
                    attempts + 1,
                    created_at,
                )
            )
        return due

    def next_due_at(self, channel: str, destination: str, *, head_only: bool = False) -> datetime | None:
        """When due_deliveries with the same ``head_only`` will next return something: the earliest next attempt, or the head's; None when empty."""
        statement = _HEAD_DUE_AT if head_only else _EARLIEST_DUE_AT
        with store_errors("reading a destination queue"), self._engine.connect() as connection:
            rows = statement.rows(connection, {"channel": channel, "destination": destination})
        return rows[0][0] if rows else None

    def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Record each attempt and its event, then settle the messages whose current deliveries are all final; one transaction.

        Every result counts as an attempt. SENT is recorded even on a row a resend or reprocess
        superseded meanwhile (it did go out); RETRY never puts a superseded row back in its queue.
        """
        if not results:
            return
        events: list[dict] = []
        settled: dict[int, datetime] = {}
        unknown: list[int] = []
        with store_errors("recording delivery attempts"):
            # TRANSACTION: each attempt's outcome and event, and the final status of every message
            # whose deliveries are now all final, so a message never shows SENT before its rows do.
            with self._engine.begin() as connection:
                # Consecutive results with the same outcome share one statement (_Rows), in the order given.
                for outcome, run in itertools.groupby(results, key=lambda r: r.outcome):
                    _RECORD_ATTEMPT[outcome].run(connection, [_attempt_values(result) for result in run])
                touched = _TOUCHED.rows(connection, {"ids": sorted({r.delivery_id for r in results})})
                found = {
                    delivery_id: (message_id, destination, attempts)
                    for delivery_id, message_id, destination, _, _, attempts, _, _ in touched
                }
                # A delivery given twice counts two attempts: each event names its own number.
                given = collections.Counter(r.delivery_id for r in results)
                attempt = {
                    delivery_id: attempts - given[delivery_id]
                    for delivery_id, (_, _, attempts) in found.items()
                }
                for result in results:
                    if result.delivery_id not in found:
                        unknown.append(result.delivery_id)
                        continue
                    message_id, destination, _ = found[result.delivery_id]
                    attempt[result.delivery_id] += 1
                    status = Status.QUEUED if result.outcome == Outcome.RETRY else str(result.outcome)
                    events.append(
                        _event(
                            message_id,
                            result.at,
                            status,
                            _attempt_detail(result, attempt[result.delivery_id]),
                            destination,
                        )
                    )
                    if result.outcome != Outcome.RETRY:
                        settled[message_id] = max(result.at, settled.get(message_id, result.at))
                if settled:
                    _roll_up(connection, settled, touched, events)
                if events:
                    _INSERT_EVENTS.run(connection, events)
        if unknown:
            log.warn(
                "attempt results for unknown deliveries were dropped: {delivery_ids}", delivery_ids=unknown
            )

    def queue_depth(self, channel: str, destination: str) -> int:
        """How many deliveries the destination's queue holds (QUEUED, due or not)."""
        c = deliveries.c
        statement = sa.select(sa.func.count()).where(
            c.channel == channel, c.destination == destination, c.status == Status.QUEUED
        )
        with store_errors("counting a destination queue"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    def queue_depths(self) -> dict[tuple[str, str], int]:
        """The depth of every queue that holds something, by (channel, destination)."""
        c = deliveries.c
        statement = (
            sa.select(c.channel, c.destination, sa.func.count())
            .where(c.status == Status.QUEUED)
            .group_by(c.channel, c.destination)
        )
        with store_errors("counting destination queues"), self._engine.connect() as connection:
            return {
                (channel, destination): depth for channel, destination, depth in connection.execute(statement)
            }

    def resend(self, message_ids: Sequence[int], *, destination: str | None = None) -> list[int]:
        """Queue again the current delivery of each message to every destination (or only ``destination``) that has a payload; returns the new delivery ids.

        The copies go to the tail of their queues, in the order of the rows they replace; the old
        rows stay as history (a still-QUEUED one leaves its queue as ERROR, so nothing goes twice).
        """
        if not message_ids:
            return []
        now = self._clock()
        c = deliveries.c
        criteria = [c.message_id.in_(list(message_ids)), c.superseded_at.is_(None), c.payload.is_not(None)]
        if destination is not None:
            criteria.append(c.destination == destination)
        current = (
            sa.select(c.id, c.message_id, c.channel, c.destination, c.status, c.control_id, c.payload)
            .where(*criteria)
            .order_by(c.id)
        )
        events: list[dict] = []
        with store_errors("resending messages"):
            # TRANSACTION: the new queued deliveries, the rows they replace, the messages back to
            # QUEUED and the events: a resend happens whole or not at all.
            with self._engine.begin() as connection:
                old = connection.execute(current).all()
                if not old:
                    return []
                _supersede(connection, old, now, "superseded by resend", events)
                rows = [
                    _new_delivery_row(
                        r.message_id,
                        r.channel,
                        r.destination,
                        Status.QUEUED,
                        r.control_id,
                        r.payload,
                        "",
                        now,
                    )
                    for r in old
                ]
                ids = list(connection.execute(_INSERT_DELIVERIES, rows).scalars())
                resent = sorted({r.message_id for r in old})
                connection.execute(
                    sa.update(messages)
                    .where(messages.c.id.in_(resent))
                    .values(status=Status.QUEUED, status_at=now, error="")
                )
                events.extend(
                    _event(message_id, now, Status.QUEUED, "resent by operator") for message_id in resent
                )
                events.extend(
                    _event(r.message_id, now, Status.QUEUED, "resent by operator", r.destination) for r in old
                )
                _INSERT_EVENTS.run(connection, events)
        return ids

    def reprocess(self, message_ids: Sequence[int]) -> int:
        """Send messages through their channel again: back to RECEIVED, old deliveries kept as history; returns how many.

        Rejected messages, messages without a channel and messages already RECEIVED are left
        alone. A still-QUEUED old delivery leaves its queue as ERROR ("superseded by reprocess").
        """
        if not message_ids:
            return 0
        now = self._clock()
        m, c = messages.c, deliveries.c
        claim = (
            sa.update(messages)
            .where(
                m.id.in_(list(message_ids)),
                m.channel.is_not(None),
                m.status.not_in([Status.RECEIVED, Status.REJECTED]),
            )
            .values(status=Status.RECEIVED, status_at=now, error="")
            .returning(m.id)
        )
        with store_errors("reprocessing messages"):
            # TRANSACTION: the messages back to RECEIVED, their deliveries superseded, and the events.
            with self._engine.begin() as connection:
                claimed = sorted(connection.execute(claim).scalars())
                if not claimed:
                    return 0
                events = [
                    _event(message_id, now, Status.RECEIVED, "reprocess requested") for message_id in claimed
                ]
                current = connection.execute(
                    sa.select(c.id, c.message_id, c.destination, c.status).where(
                        c.message_id.in_(claimed), c.superseded_at.is_(None)
                    )
                ).all()
                if current:
                    _supersede(connection, current, now, "superseded by reprocess", events)
                _INSERT_EVENTS.run(connection, events)
        return len(claimed)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
