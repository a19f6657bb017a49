"""Statements compiled once per dialect, run on the driver: ``Rows`` (many rows a call), ``Select``."""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.store.driver.errors import as_sqlalchemy_error
from engine.store.driver.forms import arrays_sql, sqlite_insert_many, sqlite_runs, sqlite_update_many


class Rows:
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
            sql, names, fields = prepare(self._statement, dialect)
            prepared = self._prepared[dialect.name] = (sql, names, fields, values_of(fields))
        sql, names, fields, row_values = prepared
        times: dict[datetime, Any] = {}
        parameters = [row_values(row, times) for row in rows]
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
        """Whether one statement may take these rows: always an INSERT's; an UPDATE's if no id comes twice."""
        if isinstance(self._statement, sa.Insert):
            return True
        index = [key for key, _, _ in fields].index("id")
        return len({values[index] for values in parameters}) == len(parameters)

    def _from_arrays(
        self, connection: sa.Connection, sql: str, names: list[str], parameters: list[tuple]
    ) -> None:
        if self._arrays is None:
            self._arrays = arrays_sql(self._statement, sql, names, connection.dialect)
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
        """SQLite: the rows in a few statements of many rows (chunks of a power of two, each kept prepared).

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
                    sqlite_update_many(sql, fields, count, connection.dialect)
                    if update
                    else sqlite_insert_many(sql, count)
                )
            chunk = parameters[start : start + count]
            if update:  # the rows' values in the CTE first, then the statement's own constants
                values = tuple(values[index] for values in chunk for index in bound) + constants
            else:
                values = tuple(itertools.chain.from_iterable(chunk))
            on_driver(connection, statement, values)


def on_driver(
    connection: sa.Connection, sql: str, parameters: Any, *, many: bool = False, fetch: bool = False
) -> list | None:
    """Run ``sql`` in the connection's transaction (``many``: per parameter set); its rows with ``fetch``.

    SQLite: on the driver's own cursor. SQLAlchemy's execution context around it
    (``exec_driver_sql``) cost more than the statement, and intake's transaction of one message
    processed at intake has three; its errors still come as SQLAlchemy would raise them.
    PostgreSQL: ``exec_driver_sql``.
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
        raise as_sqlalchemy_error(error, sql, dialect) from error
    finally:
        cursor.close()


def prepare(statement: sa.Executable, dialect: sa.Dialect, lists: dict[str, int] | None = None) -> tuple:
    """The statement's SQL for the dialect, its bind names (None when positional), and what each bind takes.

    That is, for each bind: its key (None for a constant), bind processor and constant value.
    ``lists`` gives each IN-list bind (``b_ids``) a length: it is rendered as that many binds
    (``b_ids_1``, ``b_ids_2``, ...).
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


class Select:
    """A SELECT run on the driver, compiled once per dialect; its rows are plain tuples.

    For the reads of every dispatcher pass (its due run, what its attempts touched): SQLAlchemy's
    result machinery (a Row per row, a processor call per value, an IN list expanded on every
    call) cost more than the read itself. Here only the columns whose type converts on this
    dialect (timestamps) are converted, each distinct value once per call (the rows of a queue
    share their timestamps).
    Binds are named ``b_<key>`` as in Rows. A ``listed`` key is an IN list: the statement is
    compiled once per power-of-two length, the list padded with its last value (which matches
    nothing more), so a few compilations serve every length.
    """

    def __init__(self, statement: sa.Select, *, listed: str | None = None):
        self._statement = statement
        self._listed = listed
        self._prepared: dict[tuple[str, int], tuple] = {}

    def rows(self, connection: sa.Connection, parameters: dict) -> list[tuple]:
        """The rows for these parameters, values as the column types give them.

        The parameters are keyed without the ``b_``; ``listed``'s is a non-empty sequence.
        """
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
        sql, names, row_values, converters = prepared
        values = row_values(parameters, {})
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
        sql, names, fields = prepare(
            self._statement, dialect, None if self._listed is None else {f"b_{self._listed}": size}
        )
        converters = tuple(
            (index, processor)
            for index, column in enumerate(self._statement.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        )
        return sql, names, values_of(fields), converters


def values_of(fields: tuple) -> Callable[[dict, dict], tuple]:
    """A function of (row, times) giving the row's values for ``prepare``'s fields.

    ``times`` keeps each timestamp's processed value for the call.
    """
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


def binds(table: sa.Table, *names: str) -> dict:
    """``{column: :b_column}`` for each name: a Rows statement's values (a bind is not named as a column)."""
    return {name: sa.bindparam(f"b_{name}", type_=table.c[name].type) for name in names}


def by_id(table: sa.Table, *criteria: sa.ColumnElement[bool]) -> sa.Update:
    """An UPDATE of the row whose id is the row's ``id``."""
    return sa.update(table).where(table.c.id == sa.bindparam("b_id", type_=table.c.id.type), *criteria)
