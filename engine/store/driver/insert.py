"""The intake path's INSERT: many rows of one table whose ids come back in order, on the driver.

On PostgreSQL a group goes as one statement that commits by itself (``run_alone``), with the rows
of other tables that name the new rows by position (``Children``: a message's deliveries and
events) in the same statement.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.store.driver.errors import as_sqlalchemy_error
from engine.store.driver.forms import insert_select, sqlite_insert_many, sqlite_runs, unnest_rows, values_list
from engine.store.driver.text import fit_text

# PostgreSQL: a group's rows go in one statement up to this many (its values are arrays, so the
# statement's text and parameters are the same for any count).
MAX_ROWS_PER_STATEMENT = 1000
# PostgreSQL: a group goes as VALUES lists of scalar parameters up to this many of them (the
# server takes 65,535; a group of 8 messages processed for one destination has 400), else as arrays.
VALUES_MAX_PARAMETERS = 4096
# ... and the texts of so many shapes (rows of the table and of each child) are kept.
_VALUES_TEXTS_KEPT = 256
# The new rows' ids (from m, the INSERT's) by position: children join it on k.
_POSITIONS = "n AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM m)"


@dataclass(frozen=True, slots=True)
class Children:
    """Rows of ``table`` inserted with the rows of an InsertReturningIds, each naming its row by position.

    ``link`` is the column that holds the position, ``columns`` the others; ``alias`` names the
    rows in the statement. A row is a tuple: its row's position (1, 2, ...), then ``columns``' values.
    """

    alias: str
    table: sa.Table
    link: str
    columns: tuple[str, ...]


class InsertReturningIds:
    """An INSERT of many rows of ``table`` that gives their ids in order, prepared for one database dialect.

    Each row is a list handed to the driver as it is: SQLAlchemy's per-row work (a dict per row,
    a bind processor per value) cost more than the insert itself. What SQLAlchemy would do to a
    value is still done, by the same bind processors, but only for the columns that have one.

    ``columns`` are the values a row is given (``values``); each of ``copies`` is a further column
    that takes the value of another (processed once). Text is fitted (fit_text) rather than
    refused: the intake's header columns are search copies of MSH fields (raw keeps every byte),
    and refusing one would make a sender resend it forever.
    """

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str],
        dialect: sa.Dialect,
        *,
        copies: Mapping[str, str] | None = None,
        children: Sequence[Children] = (),
    ):
        copies = copies or {}
        inserted = (*columns, *copies)
        self.sqlite = dialect.name == "sqlite"
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self._values = f"({', '.join([marker] * len(inserted))})"
        self.sql = f"INSERT INTO {table.name} ({', '.join(inserted)}) VALUES {self._values}"
        if not self.sqlite:
            self.sql += " RETURNING id"
        self._dbapi_error = dialect.dbapi.Error
        self._many: dict[int, str] = {}  # SQLite: the INSERT of that many rows
        self._dialect = dialect
        self._copies = tuple(columns.index(source) for source in copies.values())
        processors = (
            (i, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for i, name in enumerate(columns)
        )
        self._processors = tuple((i, processor) for i, processor in processors if processor is not None)
        self._text = tuple(
            (i, table.c[name].type.length)
            for i, name in enumerate(columns)
            if isinstance(table.c[name].type, sa.String)
        )
        self._children = tuple(_ChildRows(child, dialect) for child in children)
        if not self.sqlite:
            # The rows come as one array per column; ids are handed out in the order the rows come (ORDER BY).
            self._alone_sql = (
                f"{insert_select(table, inserted, dialect)} FROM {unnest_rows(table, inserted, dialect)}"
                " ORDER BY v.i RETURNING id"
            )
            # Each row names its parent by position (k), which the statement joins to the new ids.
            self._processed_sql = (
                f"WITH m AS ({self._alone_sql}), {_POSITIONS}, "
                + ", ".join(f"{child.alias} AS ({child.insert_select()})" for child in self._children)
                + " SELECT id FROM m"
            )
            from psycopg import RawCursor

            self._raw_cursor = RawCursor
            self._listed = _ValuesStatements(table, inserted, dialect, self._children)

    def values(self, given: Sequence) -> list:
        """The row of ``columns``' values ``given``, with its copies, ready for the driver."""
        row = list(given)
        for i, length in self._text:
            value = row[i]
            # fit_text changes only such values; most fit, and calling it for each cost more.
            if value and (
                not value.isascii() or "\x00" in value or (length is not None and len(value) > length)
            ):
                row[i] = fit_text(value, length)
        for i, processor in self._processors:
            row[i] = processor(row[i])
        for source in self._copies:
            row.append(row[source])
        return row

    def run(
        self, connection: sa.Connection, rows: list[list], children: Sequence[list[tuple]] = ()
    ) -> list[int]:
        """Insert the rows, then ``children`` (as for run_alone), inside the connection's transaction.

        The rows' ids, in order.
        """
        cursor = connection.connection.driver_connection.cursor()
        try:
            if self.sqlite:
                ids = self._run_sqlite(cursor, rows)
            else:
                cursor.executemany(self.sql, rows, returning=True)
                ids = [cursor.fetchone()[0]]
                while cursor.nextset():
                    ids.append(cursor.fetchone()[0])
            self._insert_children(cursor, ids, children)
        except self._dbapi_error as error:
            raise as_sqlalchemy_error(error, self.sql, self._dialect) from error
        finally:
            cursor.close()
        return ids

    def _insert_children(self, cursor, ids: list[int], children: Sequence[list[tuple]]) -> None:
        """Insert the rows of each Children after their rows (``ids``) on ``cursor``, in its transaction.

        A timestamp the children share (the group's) is processed once.
        """
        times: dict[datetime, Any] = {}
        for child, child_rows in zip(self._children, children):
            if child_rows:
                child.insert_after(cursor, child_rows, ids, times)

    def run_committed(
        self, connection: sa.Connection, rows: list[list], children: Sequence[list[tuple]] = ()
    ) -> list[int]:
        """SQLite: insert the rows and commit them, on the driver; their ids, in order.

        ``children`` are the rows of each Children given, as for run_alone, inserted after the
        rows in the same transaction, each naming its row's id.
        The connection must be in no transaction. The driver's own transaction (begun by the
        INSERT, ended by its commit) is SQLite's, as through SQLAlchemy, whose transaction
        around it cost as much as a third of the insert a message at one message a commit
        (see docs/performance.md). Nothing is left open when it fails: rolled back, then raised.
        """
        driver = connection.connection.driver_connection
        cursor = driver.cursor()
        try:
            ids = self._run_sqlite(cursor, rows)
            self._insert_children(cursor, ids, children)
            cursor.close()
            driver.commit()
            return ids
        except BaseException as error:
            cursor.close()
            with contextlib.suppress(self._dbapi_error):  # a broken connection: its caller drops it
                driver.rollback()
            if isinstance(error, self._dbapi_error):
                raise as_sqlalchemy_error(error, self.sql, self._dialect) from error
            raise

    def _run_sqlite(self, cursor, rows: list[list]) -> list[int]:
        """SQLite: the rows in a few multi-row INSERTs (chunks of a power of two, each kept prepared).

        One step per row cost more a message (see docs/performance.md), and each step lets go of
        the GIL (a chance for another thread to keep the reactor waiting). A new row's id is one
        more than the largest (an INTEGER PRIMARY KEY without AUTOINCREMENT) and this transaction
        holds the write lock, so a statement's rows have consecutive ids, ending at lastrowid.
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
        self, connection: sa.Connection, rows: list[list], children: Sequence[list[tuple]] = ()
    ) -> list[int]:
        """PostgreSQL: insert the rows in one statement that commits by itself; their ids, in order.

        ``children`` are the rows of each Children given (tuples: the position of their row
        among ``rows``, 1, 2, ..., then the child's columns), inserted in the same statement
        (data-modifying CTEs), atomic as well.

        The connection must be in no transaction. BEGIN, a pipelined executemany and COMMIT cost
        three round trips and psycopg's pipeline machinery; one INSERT in autocommit is atomic all
        the same and costs one (measured in process: see docs/performance.md). A small group's
        values are scalar parameters (_ValuesStatements); a large one's are arrays, one per
        column, so the statement's text is the same for any number of rows: psycopg parses it
        once (it re-parsed a multi-row VALUES list of each length) and the server runs it
        prepared. Either way the ids come from the sequence in row order (ORDER BY the ordinal),
        so sorted they are the rows' ids in order (what SQLAlchemy's insertmanyvalues relies on too).
        """
        if len(rows) > MAX_ROWS_PER_STATEMENT:
            raise ValueError(f"at most {MAX_ROWS_PER_STATEMENT} rows per statement, not {len(rows)}")
        children = tuple(children) or tuple([] for _ in self._children)
        listed = self._listed.statement(rows, children)
        if listed is not None:
            return self._run_listed(connection, *listed)
        driver = connection.connection.driver_connection
        sql, parameters = self._alone_sql, [list(column) for column in zip(*rows)]
        if any(children):
            sql = self._processed_sql
            times: dict[datetime, Any] = {}
            for child, child_rows in zip(self._children, children):
                parameters += child.arrays(child_rows, times)
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
        """Run a _ValuesStatements statement alone (autocommit) on the driver's RawCursor; the ids in order.

        It runs inside SQLAlchemy's (logical) transaction, so SQLAlchemy's events see the commit,
        as for any other group; the driver's commit sends nothing, since the statement committed itself.
        """
        driver = connection.connection.driver_connection
        driver.autocommit = True
        try:
            with connection.begin(), self._raw_cursor(driver) as cursor:
                cursor.execute(sql, parameters)
                return sorted(row[0] for row in cursor.fetchall())
        except self._dbapi_error as error:
            raise as_sqlalchemy_error(error, sql, self._dialect) from error
        finally:
            driver.autocommit = False

    def fits_one_statement(self, rows: list[list]) -> bool:
        """Whether run_alone takes these rows."""
        return len(rows) <= MAX_ROWS_PER_STATEMENT


class _ChildRows:
    """The rows of a Children as the driver takes them: tuples (their row's position, then the columns).

    Processed column by column: a column of one value (a group's timestamp, the position of a
    group's one message) goes through its bind processor once. SQLite inserts them after their
    rows, the positions turned into the rows' ids (``insert_after``); PostgreSQL in the statement
    of their rows, joined by position (``n.k``), or after them in a transaction.
    """

    def __init__(self, child: Children, dialect: sa.Dialect):
        table, names = child.table, child.columns
        self.alias = child.alias
        self.width = 1 + len(names)  # the parameters a row takes
        self._processors = tuple(
            (index, processor)
            for index, name in enumerate(names, start=1)
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )
        self._table, self._names, self._dialect = table, names, dialect
        self._dbapi_error = dialect.dbapi.Error
        inserted = (child.link, *names)
        if dialect.name == "sqlite":
            self._after = (
                f"INSERT INTO {table.name} ({', '.join(inserted)}) VALUES ({', '.join('?' * self.width)})"
            )
            self._many: dict[int, str] = {}
            return
        after = f"{insert_select(table, inserted, dialect)} FROM {unnest_rows(table, inserted, dialect)}"
        self._after = f"{after} ORDER BY v.i"
        # Ids are handed out in the order the rows come: the order given (a queue's order is its ids').
        self._insert = insert_select(table, inserted, dialect, ("n.id",))
        self._sql = (
            f"{self._insert} FROM {unnest_rows(table, names, dialect, positions=True)}"
            " JOIN n USING (k) ORDER BY v.i"
        )

    def columns(self, rows: Sequence[tuple], ids: list[int] | None, times: dict) -> list[tuple]:
        """The rows' values column by column, processed for the driver; with ``ids``, positions as ids.

        ``times`` keeps each timestamp's processed value (for the call: its children share theirs).
        """
        if not rows:
            return [()] * self.width
        columns = list(zip(*rows))
        if ids is not None:
            columns[0] = _each(columns[0], lambda position: ids[position - 1], None)
        for index, processor in self._processors:
            columns[index] = _each(columns[index], processor, times)
        return columns

    def insert_after(self, cursor, rows: Sequence[tuple], ids: list[int], times: dict) -> None:
        """Insert the rows on the driver's ``cursor``, in its transaction, after their rows (of ``ids``)."""
        columns = self.columns(rows, ids, times)
        sql = self._after
        try:
            if self._dialect.name != "sqlite":
                cursor.execute(sql, [list(column) for column in columns])
                return
            # A few multi-row INSERTs, each kept prepared: one step per row cost more.
            values = list(itertools.chain.from_iterable(zip(*columns)))
            for start, count in sqlite_runs(len(rows)):
                sql = self._many.get(count) or self._many.setdefault(
                    count, sqlite_insert_many(self._after, count)
                )
                cursor.execute(sql, values[start * self.width : (start + count) * self.width])
        except self._dbapi_error as error:
            raise as_sqlalchemy_error(error, sql, self._dialect) from error

    def arrays(self, rows: Sequence[tuple], times: dict) -> list[list]:
        """The parameters of ``insert_select`` for these rows: one list per column (positions first)."""
        return [list(column) for column in self.columns(rows, None, times)]

    def insert_select(self) -> str:
        """The INSERT of the rows, each joined to its parent (``n``, by position ``k``)."""
        return self._sql

    def listed(self, rows: Sequence[tuple], times: dict) -> list:
        """The parameters of ``insert_listed`` for these rows: each one's parent position and values."""
        return list(itertools.chain.from_iterable(zip(*self.columns(rows, None, times))))

    def insert_listed(self, count: int, numbers: Iterator[int]) -> str:
        """The INSERT of ``count`` rows given as scalar parameters, each joined to its parent.

        Their placeholders are numbered from ``numbers``.
        """
        rows = values_list(self._table, self._names, self._dialect, count, numbers, positions=True)
        return f"{self._insert} FROM {rows} JOIN n USING (k) ORDER BY v.i"


def _each(column: tuple, function: Callable[[Any], Any], times: dict | None) -> tuple:
    """``function`` of each value of ``column`` but None; of the first alone when all are equal to it.

    ``times`` (unless None) keeps the result of a timestamp, for the columns after.
    """
    first = column[0]
    if column.count(first) != len(column):
        return tuple(None if value is None else function(value) for value in column)
    if first is None:
        return column
    if times is None or not isinstance(first, datetime):
        return (function(first),) * len(column)
    processed = times.get(first)
    if processed is None:
        processed = times[first] = function(first)
    return (processed,) * len(column)


class _ValuesStatements:
    """PostgreSQL: a small group's statement as VALUES lists of scalar parameters ($1, ...), for a RawCursor.

    What run_alone sends as arrays (one statement text for any count) costs psycopg most of its
    Python work: it dumps an array element by element in Python, while scalar parameters are
    dumped by its C code, and a RawCursor's ``$n`` statement is not parsed in Python at all
    (measured in process: see docs/performance.md). So a group goes this way while its parameters
    are few (``VALUES_MAX_PARAMETERS``); a larger one, rare on the intake path, as arrays. Each
    text is kept by its shape (rows, rows of each child), so psycopg prepares what repeats on the
    server; rows keep their order as with arrays (``ORDER BY v.i``), each placeholder cast to its
    column's type (a NULL or a text in a VALUES list has none).
    """

    def __init__(
        self, table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect, children: Sequence[_ChildRows]
    ):
        self._table, self._columns, self._dialect = table, columns, dialect
        self._children = children
        self._texts: dict[tuple[int, ...], str] = {}

    def statement(self, rows: list[list], children: Sequence[list[tuple]]) -> tuple[str, list] | None:
        """(text, parameters) of the rows with the rows of each child; None when too many parameters."""
        count = len(rows) * len(self._columns) + sum(
            len(child_rows) * child.width for child, child_rows in zip(self._children, children)
        )
        if count > VALUES_MAX_PARAMETERS:
            return None
        parameters = [value for row in rows for value in row]
        times: dict[datetime, Any] = {}
        for child, child_rows in zip(self._children, children):
            parameters += child.listed(child_rows, times)
        shape = (len(rows), *map(len, children))
        text = self._texts.get(shape)
        if text is None:
            if len(self._texts) >= _VALUES_TEXTS_KEPT:
                self._texts.clear()
            text = self._texts[shape] = self._text(shape[0], shape[1:])
        return text, parameters

    def _text(self, count: int, children_counts: Sequence[int]) -> str:
        numbers = itertools.count(1)
        rows = values_list(self._table, self._columns, self._dialect, count, numbers)
        head = insert_select(self._table, self._columns, self._dialect)
        insert = f"{head} FROM {rows} ORDER BY v.i RETURNING id"
        if not any(children_counts):
            return insert
        parts = [f"WITH m AS ({insert}), {_POSITIONS}"]
        for child, child_count in zip(self._children, children_counts):
            if child_count:
                parts.append(f"{child.alias} AS ({child.insert_listed(child_count, numbers)})")
        return ", ".join(parts) + " SELECT id FROM m"
