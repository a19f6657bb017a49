"""Single-table statements on the driver: selects by key, inserts, updates by id, deletes; rows as dicts.

Each shape of statement (a table, what it does, which columns) becomes SQL text once per dialect
(``Tables``), and values go in and come out through the bind and result processors SQLAlchemy
itself applies to those columns (UTC timestamps, booleans, JSON, decimals), so the rows are the
ones SQLAlchemy would write and read. Building, caching and compiling a SQLAlchemy construct and
wrapping its result cost several times the statement itself, and the record writes dozens of them
a message. A key is a tuple of (column, operator) pairs: ``=`` and ``<>`` compare with a value,
``null`` is IS NULL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.store.cipher import BLIND, CLEAR, FIT, SEALED, Cipher
from engine.store.driver.errors import as_sqlalchemy_error
from engine.store.driver.forms import sqlite_runs
from engine.store.driver.text import fit_text
from engine.store.schema import UTCDateTime

# Keys OR-ed in one SELECT at most (SQLite refuses an expression deeper than 1,000).
_KEYS_PER_SELECT = 100
# Timestamps kept in their bound and in their read form (each way) at most; then forgotten and kept anew.
TIMES_KEPT = 20_000

Key = tuple[tuple[str, str], ...]


class Table:
    """One table as the driver sees it: quoted names, and how each column's values are fitted and bound.

    A sealed column's text (``Column.info[SEALED]``) is fitted to its ``FIT`` length, then sealed;
    a search key's (``BLIND``) is fitted, then hashed (fit gives it hashed: what the database holds,
    for comparing with what is read).
    """

    def __init__(self, table: sa.Table, dialect: sa.Dialect, null: object, cipher: Cipher = CLEAR):
        quote = dialect.identifier_preparer.quote
        self.name = quote(table.name)
        self.primary_key = table.primary_key.columns.keys()[0]
        self.columns = tuple(column.name for column in table.c)
        self.quoted = {column.name: quote(column.name) for column in table.c}
        self.types = {column.name: column.type.dialect_impl(dialect) for column in table.c}
        self.sealed = frozenset(column.name for column in table.c if column.info.get(SEALED))
        self._blind = {column.name: cipher.blind for column in table.c if column.info.get(BLIND)}
        # (whether it holds text, its length (None: any), SQLAlchemy's bind processor or None)
        self.binds = {
            column.name: (
                isinstance(column.type, sa.String),
                column.info.get(FIT, column.type.length) if isinstance(column.type, sa.String) else None,
                self._sealing(column.name, cipher, self.types[column.name].bind_processor(dialect)),
            )
            for column in table.c
        }
        self._lengths = {name: length for name, (text, length, _) in self.binds.items() if text}  # for fit
        self.has_id = "id" in table.c
        self._null = null
        self._plans: dict[tuple[str, ...], tuple[tuple, tuple]] = {}  # for parameters, by shape

    def _sealing(
        self, name: str, cipher: Cipher, processor: Callable[[Any], Any] | None
    ) -> Callable[[Any], Any] | None:
        """The bind processor of a column: SQLAlchemy's, after sealing when the column is sealed.

        Sealing asks the cipher each time: a reload may give it keys (Cipher.rotate).
        """
        if name in self._blind:
            blind = cipher.blind
            return blind if processor is None else lambda value: processor(blind(value))
        if name not in self.sealed:
            return processor
        if processor is None:
            return cipher.seal_text
        return lambda value: processor(cipher.seal_text(value))

    def fit(self, values: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, Any]:
        """The values as the database will hold them: text through fit_text, anything else as it is.

        A search key comes hashed, as it is read back. ``names``: these columns alone, in this
        order, each None where ``values`` has none.
        """
        lengths = self._lengths
        fitted = {}
        for name in values if names is None else names:
            value = values.get(name)
            # most text already fits: no call for it (the cases where fit_text, text.py, returns
            # the value unchanged; keep the two in step)
            if isinstance(value, str) and name in lengths:
                length = lengths[name]
                if not (value.isascii() and "\x00" not in value and (length is None or len(value) <= length)):
                    value = fit_text(value, length)
            fitted[name] = value
        for name, blind in self._blind.items():
            if name in fitted:
                fitted[name] = blind(fitted[name])
        return fitted

    def parameters(
        self, values: Mapping[str, Any], times: dict[datetime, Any], plan: tuple[tuple, tuple] | None = None
    ) -> list[Any]:
        """The values as the driver takes them: fitted, the ``null`` marker as None, through bind processors.

        ``times`` keeps the bound form of each timestamp: a message stamps its time on every row,
        and a batch its clock on every row it creates. What each column of a shape of values
        (its column names, in order) needs is worked out once (``plan``): most need nothing; rows
        of one shape may pass their plan, not have it looked up for each.
        """
        texts, processed = plan or self.plan(tuple(values))
        parameters = list(values.values())
        null = self._null
        if null is not None and null in parameters:
            parameters = [None if value is null else value for value in parameters]
        for index, length in texts:
            value = parameters[index]
            # most text already fits: no call for it (a hundred values a message)
            if isinstance(value, str) and not (
                value.isascii() and "\x00" not in value and (length is None or len(value) <= length)
            ):
                parameters[index] = fit_text(value, length)
        for index, processor in processed:
            value = parameters[index]
            if isinstance(value, datetime):
                bound = times.get(value)
                if bound is None:
                    bound = times[value] = processor(value)
                parameters[index] = bound
            else:
                parameters[index] = processor(value)
        return parameters

    def plan(self, names: tuple[str, ...]) -> tuple[tuple, tuple]:
        """What values of these columns need: (position, length) of each text column.

        And (position, bind processor) of each column that has one (after fitting, for a sealed text).
        """
        found = self._plans.get(names)
        if found is not None:
            return found
        binds = [self.binds[name] for name in names]
        found = self._plans[names] = (
            tuple((index, length) for index, (text, length, _) in enumerate(binds) if text),
            tuple(
                (index, processor) for index, (_, _, processor) in enumerate(binds) if processor is not None
            ),
        )
        return found


class Tables:
    """The SQL of single-table statements for one database dialect, each shape built once and kept.

    ``null``: a value that is written as NULL (the record's "keep what is there", where a row is new).
    ``cipher`` seals the values of sealed columns written and opens those read.
    """

    def __init__(self, dialect: sa.Dialect, *, null: object = None, cipher: Cipher = CLEAR):
        self.dialect = dialect
        self._null = null
        self._cipher = cipher
        self._marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self.returning = dialect.name != "sqlite"  # sqlite3's lastrowid is exact for one-row inserts
        self._tables: dict[str, Table] = {}
        self._sql: dict[tuple, str] = {}
        # select SQL -> (names, result processors), from its first cursor description
        self._results: dict[str, tuple] = {}
        self.bound_times: dict[datetime, Any] = {}  # for Table.parameters
        # a timestamp as the driver gives it -> as SQLAlchemy reads it
        self._read_times: dict[Any, datetime] = {}

    def table(self, table: sa.Table) -> Table:
        """The driver's view of ``table``."""
        found = self._tables.get(table.name)
        if found is None:
            found = self._tables[table.name] = Table(table, self.dialect, self._null, self._cipher)
        return found

    def insert(self, table: Table, names: tuple[str, ...], rows: int = 1) -> str:
        """``INSERT`` of these columns for ``rows`` rows.

        One row's has ``RETURNING id`` where the driver has no exact lastrowid.
        """
        shape = ("insert", table.name, names, rows)
        sql = self._sql.get(shape)
        if sql is None:
            columns = ", ".join(table.quoted[name] for name in names)
            row = f"({', '.join([self._marker] * len(names))})"
            sql = f"INSERT INTO {table.name} ({columns}) VALUES {', '.join([row] * rows)}"
            if self.returning and table.has_id and rows == 1:
                sql += " RETURNING id"
            self._sql[shape] = sql
        return sql

    def update(self, table: Table, names: tuple[str, ...]) -> str:
        """``UPDATE`` of these columns of the row with a given id."""
        shape = ("update", table.name, names)
        sql = self._sql.get(shape)
        if sql is None:
            assignments = ", ".join(f"{table.quoted[name]} = {self._marker}" for name in names)
            sql = self._sql[shape] = f"UPDATE {table.name} SET {assignments} WHERE id = {self._marker}"
        return sql

    def select(
        self, table: Table, keys: tuple[Key, ...], order: tuple[str, ...], descending: bool, limit: int | None
    ) -> str:
        """``SELECT`` every column of the rows matching any of ``keys`` in ``order``."""
        shape = ("select", table.name, keys, order, descending, limit)
        sql = self._sql.get(shape)
        if sql is None:
            columns = ", ".join(table.quoted[name] for name in table.columns)
            sql = f"SELECT {columns} FROM {table.name}{self._where(table, *keys)}"
            if order:
                direction = " DESC" if descending else ""
                sql += " ORDER BY " + ", ".join(f"{table.quoted[name]}{direction}" for name in order)
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            self._sql[shape] = sql
        return sql

    def parents(self, i: Table, p: Table, link: str, key: tuple[str, ...], keys: int) -> str:
        """``SELECT`` the rows of ``i`` matching any of ``keys`` keys, each with the row of ``p`` it links to.

        A key is ``key``'s columns of ``i``; each row comes as those columns, then every column of
        the row of ``p`` whose id its ``link`` holds, in ``i``'s id order.
        """
        shape = ("parents", i.name, p.name, link, key, keys)
        sql = self._sql.get(shape)
        if sql is None:
            columns = ", ".join(f"p.{p.quoted[name]}" for name in p.columns)
            condition = " AND ".join(f"i.{i.quoted[name]} = {self._marker}" for name in key)
            sql = self._sql[shape] = (
                f"SELECT {', '.join(f'i.{i.quoted[name]}' for name in key)}, {columns}"
                f" FROM {i.name} i JOIN {p.name} p ON p.id = i.{link}"
                f" WHERE {' OR '.join([f'({condition})'] * keys)} ORDER BY i.id"
            )
        return sql

    def delete(self, table: Table, key: Key) -> str:
        """``DELETE`` the rows matching ``key``."""
        shape = ("delete", table.name, key)
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._sql[shape] = f"DELETE FROM {table.name}{self._where(table, key)}"
        return sql

    def _where(self, table: Table, *keys: Key) -> str:
        if not any(keys):
            return ""
        conditions = [
            " AND ".join(
                f"{table.quoted[name]} IS NULL"
                if operator == "null"
                else f"{table.quoted[name]} {operator} {self._marker}"
                for name, operator in key
            )
            for key in keys
        ]
        return " WHERE " + (
            conditions[0]
            if len(conditions) == 1
            else " OR ".join(f"({condition})" for condition in conditions)
        )

    def result(self, sql: str, table: Table, cursor, *, after: int = 0) -> tuple[tuple[str, ...], tuple]:
        """Column names, and (name, result processor) of the columns that have one, for a select of ``table``.

        The select was just run on ``cursor``. A processor is SQLAlchemy's; a column without one
        is taken as the driver gives it. ``after``: that many leading columns (another table's)
        are not ``table``'s, nor described.
        """
        found = self._results.get(sql)
        if found is None:
            # psycopg builds the description anew on each access: read once per statement
            description = cursor.description[after:]
            names = tuple(column[0] for column in description)
            opened = self._cipher.open_text
            processors = [
                (name, opened if name in table.sealed else self._reading(table.types[name], column[1]))
                for name, column in zip(names, description)
            ]
            found = self._results[sql] = (
                names,
                tuple((name, processor) for name, processor in processors if processor is not None),
            )
        return found

    def _reading(self, column_type: sa.types.TypeEngine, driver_type: Any) -> Callable[[Any], Any] | None:
        """SQLAlchemy's result processor for a column; for a timestamp, one that remembers what it read.

        Rows share the times of their messages.
        """
        processor = column_type.result_processor(self.dialect, driver_type)
        if processor is None or not isinstance(column_type, UTCDateTime):
            return processor
        read_times = self._read_times

        def read(value: Any) -> datetime | None:
            if value is None:
                return None
            found = read_times.get(value)
            if found is None:
                if len(read_times) >= TIMES_KEPT:
                    read_times.clear()
                found = read_times[value] = processor(value)
            return found

        return read


class TableCursor:
    """The statements of ``Tables`` run on one connection's driver cursor, inside its transaction."""

    def __init__(self, connection: sa.Connection, tables: Tables):
        self._tables = tables
        self._cursor = connection.connection.driver_connection.cursor()
        self._dbapi_error = tables.dialect.dbapi.Error
        self._times = tables.bound_times
        if len(self._times) >= TIMES_KEPT:
            self._times.clear()

    def _execute(self, sql: str, parameters: list) -> Any:
        try:
            self._cursor.execute(sql, parameters)
        except self._dbapi_error as error:
            raise as_sqlalchemy_error(error, sql, self._tables.dialect) from error
        return self._cursor

    def select(
        self,
        table: sa.Table,
        keys: Sequence[tuple[Key, Mapping[str, Any]]],
        *,
        order: tuple[str, ...],
        descending: bool,
        limit: int | None,
    ) -> list[dict[str, Any]]:
        """The rows matching one of ``keys`` (a key and the values it compares with), as dicts, in ``order``.

        More than _KEYS_PER_SELECT keys take one select each that many (SQLite refuses an OR
        of 1,000 terms): the rows are then in order within each, and ``limit`` counts in each.
        """
        if len(keys) > _KEYS_PER_SELECT:
            return [
                row
                for start in range(0, len(keys), _KEYS_PER_SELECT)
                for row in self.select(
                    table,
                    keys[start : start + _KEYS_PER_SELECT],
                    order=order,
                    descending=descending,
                    limit=limit,
                )
            ]
        driver_table = self._tables.table(table)
        shapes, parameters = [], []
        for shape, values in keys:
            shapes.append(shape)
            parameters += driver_table.parameters(values, self._times)
        sql = self._tables.select(driver_table, tuple(shapes), order, descending, limit)
        cursor = self._execute(sql, parameters)
        found = cursor.fetchall()
        names, processors = self._tables.result(sql, driver_table, cursor)
        return [_row(names, processors, row) for row in found]

    def parents(
        self, i: sa.Table, p: sa.Table, link: str, key: tuple[str, ...], keys: Sequence[tuple]
    ) -> list[tuple]:
        """Each of ``keys`` that a row of ``i`` holds, with the row of ``p`` it links to, in ``i``'s id order.

        A key is values of ``i``'s ``key`` columns. Each comes as those values then the row as a
        dict, one dict for the keys of one row of ``p`` (a patient's identifiers name one patient);
        as for ``select``, in order within each select of _KEYS_PER_SELECT keys.
        """
        if len(keys) > _KEYS_PER_SELECT:
            return [
                found
                for start in range(0, len(keys), _KEYS_PER_SELECT)
                for found in self.parents(i, p, link, key, keys[start : start + _KEYS_PER_SELECT])
            ]
        keyed, parent = self._tables.table(i), self._tables.table(p)
        width = len(key)
        parameters = [
            value for values in keys for value in keyed.parameters(dict(zip(key, values)), self._times)
        ]
        sql = self._tables.parents(keyed, parent, link, key, len(keys))
        cursor = self._execute(sql, parameters)
        found = cursor.fetchall()
        names, processors = self._tables.result(sql, parent, cursor, after=width)
        read: dict[Any, dict[str, Any]] = {}  # by the parent's primary key, read once
        at = width + names.index(parent.primary_key)
        linked = []
        for row in found:
            parent_row = read.get(row[at])
            if parent_row is None:
                parent_row = read[row[at]] = _row(names, processors, row[width:])
            linked.append((*row[:width], parent_row))
        return linked

    def insert(self, table: sa.Table, row: Mapping[str, Any]) -> Any:
        """Insert a row; returns its id (its primary key where it has no id)."""
        driver_table = self._tables.table(table)
        names = tuple(row)
        cursor = self._execute(
            self._tables.insert(driver_table, names),
            driver_table.parameters(row, self._times, driver_table.plan(names)),
        )
        if not driver_table.has_id:
            return row[driver_table.primary_key]
        return cursor.fetchone()[0] if self._tables.returning else cursor.lastrowid

    def insert_many(self, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert rows in order, a few statements per run of rows with the same columns; no ids are returned.

        A run goes in chunks of a power of two rows (``sqlite_runs``, at most 128 rows: SQLite
        allows 32,766 parameters, a row has up to 30), so a few statements, each kept prepared by
        the driver, serve any number of rows.
        """
        driver_table = self._tables.table(table)
        for names, run in itertools.groupby(rows, key=tuple):
            run = list(run)
            plan = driver_table.plan(names)
            for start, count in sqlite_runs(len(run)):
                parameters = [
                    value
                    for row in run[start : start + count]
                    for value in driver_table.parameters(row, self._times, plan)
                ]
                self._execute(self._tables.insert(driver_table, names, count), parameters)

    def update(self, table: sa.Table, changes: Mapping[str, Any], row_id: int) -> None:
        """Write ``changes`` to the row whose id is ``row_id``."""
        driver_table = self._tables.table(table)
        self._execute(
            self._tables.update(driver_table, tuple(changes)),
            [*driver_table.parameters(changes, self._times), row_id],
        )

    def delete(self, table: sa.Table, key: Key, values: Mapping[str, Any]) -> None:
        """Delete the rows matching ``key`` compared with ``values``."""
        driver_table = self._tables.table(table)
        self._execute(self._tables.delete(driver_table, key), driver_table.parameters(values, self._times))


def _row(names: tuple[str, ...], processors: tuple, values: Sequence[Any]) -> dict[str, Any]:
    """A row read as a dict: each value as the driver gave it, through its column's processor if any."""
    row = dict(zip(names, values))
    for name, processor in processors:
        row[name] = processor(row[name])
    return row
