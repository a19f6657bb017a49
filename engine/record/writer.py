"""Writes of the record inside one transaction, each change keeping its previous value in record_history.

Statements go to the database driver directly: each shape of statement (a table, what it does,
which columns) becomes SQL text once per dialect (``Statements``), and values go in and come out
through the bind and result processors SQLAlchemy itself applies to those columns (UTC
timestamps, booleans, JSON, decimals), so the rows are the ones SQLAlchemy would write and read.
Building, caching and compiling a SQLAlchemy construct and wrapping its result cost several times
the statement itself, and a message makes dozens of them (issue 5's profile).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from engine.record import schema
from engine.record.extract import KEEP
from engine.store.schema import UTCDateTime

__all__ = ["Differs", "Statements", "Writer", "history_text", "list_digest"]

# Rows in one multi-row INSERT at most (SQLite allows 32,766 parameters; a row has up to 30).
_ROWS_PER_INSERT = 500
# Keys OR-ed in one SELECT at most (SQLite refuses an expression deeper than 1,000).
_KEYS_PER_SELECT = 100

# Timestamps kept in their bound and in their read form (each way) at most; then forgotten and kept anew.
_TIMES_KEPT = 20_000

# Columns every fact table manages itself; never compared or recorded as a change of content.
_BOOKKEEPING = frozenset({"id", "as_of", "message_id", "created_at", "updated_at"})


def history_text(value: Any) -> str | None:
    """A stored value as record_history text (ISO times, JSON lists)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def list_digest(rows: list[dict[str, Any]]) -> str:
    """A digest of a patient's list as ``Writer.fit_list`` gives it: equal digests, equal lists (record_patients.list_digests).

    The rows hold text and None only, whose repr is one text per value (and several times
    cheaper than JSON); were it ever written differently, digests would differ and the list
    would be read and compared once more, never taken for another.
    """
    return hashlib.blake2b(repr(rows).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) or isinstance(new, float):
        return old is not None and new is not None and abs(float(old) - float(new)) < 1e-9
    return old == new


@dataclass(frozen=True, slots=True)
class Differs:
    """A key value that selects the rows whose column is anything but ``value`` (``<>``)."""

    value: Any


class _Table:
    """One table as the driver sees it: quoted names, and how each column's values are fitted and bound."""

    def __init__(self, table: sa.Table, dialect: sa.Dialect):
        quote = dialect.identifier_preparer.quote
        self.name = quote(table.name)
        self.primary_key = table.primary_key.columns.keys()[0]
        self.columns = tuple(column.name for column in table.c)
        self.quoted = {column.name: quote(column.name) for column in table.c}
        self.types = {column.name: column.type.dialect_impl(dialect) for column in table.c}
        # (text length: -1 for text without a limit, None for other types; SQLAlchemy's bind processor or None)
        self.binds = {
            column.name: (
                (column.type.length if column.type.length is not None else -1)
                if isinstance(column.type, sa.String)
                else None,
                self.types[column.name].bind_processor(dialect),
            )
            for column in table.c
        }
        self.stamps = tuple(name for name in ("message_id", "as_of") if name in table.c)
        self.has_id = "id" in table.c

    def fit(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values as the database will hold them: text through ``_fit_text``, KEEP as it is."""
        binds = self.binds
        return {
            name: _fit_text(value, binds[name][0])
            if isinstance(value, str) and binds[name][0] is not None
            else value
            for name, value in values.items()
        }

    def parameters(self, values: Mapping[str, Any], times: dict[datetime, Any]) -> list[Any]:
        """The values fitted (KEEP as None) and through each column's bind processor, as the driver takes them.

        ``times`` keeps the bound form of each timestamp: a message stamps its time on every row,
        and a batch its clock on every row it creates.
        """
        binds = self.binds
        parameters = []
        for name, value in values.items():
            length, processor = binds[name]
            if value is KEEP:
                value = None
            elif length is not None and isinstance(value, str):
                value = _fit_text(value, length)
            if processor is not None:
                if isinstance(value, datetime):
                    bound = times.get(value)
                    if bound is None:
                        bound = times[value] = processor(value)
                    value = bound
                else:
                    value = processor(value)
            parameters.append(value)
        return parameters


def _fit_text(value: str, length: int) -> str:
    """Text as the database holds it: lone surrogates (bytes the message's charset could not decode) as "?", no NULs, at most ``length`` (-1: any)."""
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value if length < 0 else value[:length]


class Statements:
    """The record's SQL for one database dialect, each statement shape built once and kept."""

    def __init__(self, dialect: sa.Dialect):
        self.dialect = dialect
        self._marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self.returning = dialect.name != "sqlite"  # sqlite3's lastrowid is exact for one-row inserts
        self._tables: dict[str, _Table] = {}
        self._sql: dict[tuple, str] = {}
        self._results: dict[
            str, tuple
        ] = {}  # select SQL -> (names, result processors), from its first cursor description
        self.bound_times: dict[datetime, Any] = {}  # for _Table.parameters
        self._read_times: dict[
            Any, datetime
        ] = {}  # a timestamp as the driver gives it -> as SQLAlchemy reads it

    def table(self, table: sa.Table) -> _Table:
        """The driver's view of ``table``."""
        found = self._tables.get(table.name)
        if found is None:
            found = self._tables[table.name] = _Table(table, self.dialect)
        return found

    def insert(self, table: _Table, names: tuple[str, ...], rows: int = 1) -> str:
        """``INSERT`` of these columns for ``rows`` rows; of one row with ``RETURNING id`` where the driver has no exact lastrowid."""
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

    def update(self, table: _Table, names: tuple[str, ...]) -> str:
        """``UPDATE`` of these columns of the row with a given id."""
        shape = ("update", table.name, names)
        sql = self._sql.get(shape)
        if sql is None:
            assignments = ", ".join(f"{table.quoted[name]} = {self._marker}" for name in names)
            sql = self._sql[shape] = f"UPDATE {table.name} SET {assignments} WHERE id = {self._marker}"
        return sql

    def select(
        self,
        table: _Table,
        keys: tuple[tuple[tuple[str, str], ...], ...],
        order: tuple[str, ...],
        descending: bool,
        limit: int | None,
    ) -> str:
        """``SELECT`` every column of the rows matching any of ``keys`` (each (column, operator) pairs) in ``order``."""
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

    def identified(self, keys: int) -> str:
        """``SELECT`` authority, value and the patient's every column of the identifiers matching any of ``keys`` (authority, value) pairs, in identifier id order."""
        shape = ("identified", keys)
        sql = self._sql.get(shape)
        if sql is None:
            i, p = self.table(schema.identifiers), self.table(schema.patients)
            columns = ", ".join(f"p.{p.quoted[name]}" for name in p.columns)
            key = f"(i.{i.quoted['authority']} = {self._marker} AND i.{i.quoted['value']} = {self._marker})"
            sql = self._sql[shape] = (
                f"SELECT i.{i.quoted['authority']}, i.{i.quoted['value']}, {columns} FROM {i.name} i JOIN {p.name} p ON p.id = i.patient_id"
                f" WHERE {' OR '.join([key] * keys)} ORDER BY i.id"
            )
        return sql

    def delete(self, table: _Table, key: tuple[tuple[str, str], ...]) -> str:
        """``DELETE`` the rows matching ``key``."""
        shape = ("delete", table.name, key)
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._sql[shape] = f"DELETE FROM {table.name}{self._where(table, key)}"
        return sql

    def _where(self, table: _Table, *keys: tuple[tuple[str, str], ...]) -> str:
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

    def result(self, sql: str, table: _Table, cursor, *, after: int = 0) -> tuple[tuple[str, ...], list]:
        """Column names and SQLAlchemy's result processor of each (None: taken as the driver gives it) for a select of ``table`` just run on ``cursor``.

        ``after``: that many leading columns (another table's) are not ``table``'s, nor described.
        """
        found = self._results.get(sql)
        if found is None:
            description = cursor.description[
                after:
            ]  # psycopg builds it anew on each access: read once per statement
            names = tuple(column[0] for column in description)
            processors = [
                self._reading(table.types[name], column[1]) for name, column in zip(names, description)
            ]
            found = self._results[sql] = (names, processors)
        return found

    def _reading(self, column_type: sa.types.TypeEngine, driver_type: Any) -> Callable[[Any], Any] | None:
        """SQLAlchemy's result processor for a column; for a timestamp (rows share the times of their messages) one that remembers what it read."""
        processor = column_type.result_processor(self.dialect, driver_type)
        if processor is None or not isinstance(column_type, UTCDateTime):
            return processor
        read_times = self._read_times

        def read(value: Any) -> datetime | None:
            if value is None:
                return None
            found = read_times.get(value)
            if found is None:
                if len(read_times) >= _TIMES_KEPT:
                    read_times.clear()
                found = read_times[value] = processor(value)
            return found

        return read


def _key(key: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
    """A key's shape (column, operator) and the values it compares with: None means IS NULL, Differs(v) means <> v."""
    shape, values = [], {}
    for name, value in key.items():
        if value is None:
            shape.append((name, "null"))
        elif isinstance(value, Differs):
            shape.append((name, "<>"))
            values[name] = value.value
        else:
            shape.append((name, "="))
            values[name] = value
    return tuple(shape), values


class Writer:
    """One unit of work for one message (or one operator action): selects, inserts, updates with history, list replacements.

    ``connection`` is in a transaction; every statement runs on its driver connection, inside it.
    """

    def __init__(
        self,
        connection: sa.Connection,
        statements: Statements,
        *,
        message_id: int | None,
        cause: str,
        now: datetime,
        message_time: datetime,
    ):
        self.connection = connection
        self.message_id = message_id
        self.cause = cause[:60]
        self.now = now
        self.message_time = message_time
        self._statements = statements
        self._cursor = connection.connection.driver_connection.cursor()
        self._dbapi_error = statements.dialect.dbapi.Error
        self._times = statements.bound_times
        if len(self._times) >= _TIMES_KEPT:
            self._times.clear()

    def _execute(self, sql: str, parameters: list) -> Any:
        try:
            self._cursor.execute(sql, parameters)
        except self._dbapi_error as error:
            # As SQLAlchemy would raise it, so store_errors and the callers judge it the same way.
            raise sa_exc.DBAPIError.instance(
                sql, None, error, self._dbapi_error, hide_parameters=True, dialect=self._statements.dialect
            ) from error
        return self._cursor

    def rows(
        self,
        table: sa.Table,
        *keys: Mapping[str, Any],
        order: tuple[str, ...] = ("id",),
        descending: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The rows whose columns equal those of one of the ``keys`` (None: IS NULL; ``Differs(v)``: <> v), as dicts, in ``order``.

        More than _KEYS_PER_SELECT keys take one select each that many (SQLite refuses an OR
        of 1,000 terms): the rows are then in order within each, and ``limit`` counts in each.
        """
        if len(keys) > _KEYS_PER_SELECT:
            return [
                row
                for start in range(0, len(keys), _KEYS_PER_SELECT)
                for row in self.rows(
                    table,
                    *keys[start : start + _KEYS_PER_SELECT],
                    order=order,
                    descending=descending,
                    limit=limit,
                )
            ]
        driver_table = self._statements.table(table)
        shapes, parameters = [], []
        for key in keys:
            shape, values = _key(key)
            shapes.append(shape)
            parameters += driver_table.parameters(values, self._times)
        sql = self._statements.select(driver_table, tuple(shapes), order, descending, limit)
        cursor = self._execute(sql, parameters)
        found = cursor.fetchall()
        names, processors = self._statements.result(sql, driver_table, cursor)
        return [
            dict(
                zip(
                    names,
                    [
                        value if processor is None else processor(value)
                        for processor, value in zip(processors, row)
                    ],
                )
            )
            for row in found
        ]

    def identified(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str, dict[str, Any]]]:
        """Each (authority, value) of ``keys`` that the record knows, with the row of the patient it is linked to, in identifier id order (as ``rows``: within each select)."""
        if len(keys) > _KEYS_PER_SELECT:
            return [
                found
                for start in range(0, len(keys), _KEYS_PER_SELECT)
                for found in self.identified(keys[start : start + _KEYS_PER_SELECT])
            ]
        identifiers, patients = (
            self._statements.table(schema.identifiers),
            self._statements.table(schema.patients),
        )
        parameters = [
            value
            for authority, value in keys
            for value in identifiers.parameters({"authority": authority, "value": value}, self._times)
        ]
        sql = self._statements.identified(len(keys))
        cursor = self._execute(sql, parameters)
        found = cursor.fetchall()
        names, processors = self._statements.result(sql, patients, cursor, after=2)
        return [
            (
                row[0],
                row[1],
                dict(
                    zip(
                        names,
                        [
                            value if processor is None else processor(value)
                            for processor, value in zip(processors, row[2:])
                        ],
                    )
                ),
            )
            for row in found
        ]

    def select_one(self, table: sa.Table, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row (lowest id) matching ``key``, or None."""
        found = self.rows(table, key, limit=1)
        return found[0] if found else None

    def first(
        self, table: sa.Table, rows: Iterable[Mapping[str, Any]], key: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The first of ``rows`` (read by ``rows``) that ``select_one(table, key)`` would select among them; None as IS NULL, no ``Differs``.

        The key's values are compared as the database holds them (fitted), so a lookup in rows
        read once answers as a select would.
        """
        fitted = self._statements.table(table).fit(key)
        for row in rows:
            if all(
                row[name] is None if value is None else row[name] == value for name, value in fitted.items()
            ):
                return row
        return None

    def insert(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert a row (KEEP counts as None) stamped with this message and its time; returns its id."""
        driver_table = self._statements.table(table)
        row = self._stamped(driver_table, values)
        cursor = self._execute(
            self._statements.insert(driver_table, tuple(row)), driver_table.parameters(row, self._times)
        )
        if not driver_table.has_id:
            return row[driver_table.primary_key]
        return cursor.fetchone()[0] if self._statements.returning else cursor.lastrowid

    def insert_many(self, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert rows as ``insert`` does, in order, in one statement per run of rows with the same columns; their ids are not returned."""
        driver_table = self._statements.table(table)
        for names, run in itertools.groupby(
            (self._stamped(driver_table, values) for values in rows), key=tuple
        ):
            run = list(run)
            for start in range(0, len(run), _ROWS_PER_INSERT):
                chunk = run[start : start + _ROWS_PER_INSERT]
                parameters = [value for row in chunk for value in driver_table.parameters(row, self._times)]
                self._execute(self._statements.insert(driver_table, names, len(chunk)), parameters)

    def _stamped(self, table: _Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """The row with this message and its time where it names none."""
        row = dict(values)
        for name in table.stamps:
            if name not in values:
                row[name] = self.message_id if name == "message_id" else self.message_time
        return row

    def delete(self, table: sa.Table, key: Mapping[str, Any]) -> None:
        """Delete the rows matching ``key``."""
        driver_table = self._statements.table(table)
        shape, values = _key(key)
        self._execute(
            self._statements.delete(driver_table, shape), driver_table.parameters(values, self._times)
        )

    def is_stale(self, row: Mapping[str, Any]) -> bool:
        """Whether this message is older than the data the row holds (so it must not overwrite it)."""
        return self.message_time < row["as_of"]

    def update(
        self,
        table: sa.Table,
        row: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        cause: str | None = None,
        unrecorded: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the sent values (not KEEP) that differ from ``row``, each with a history row; True when something changed.

        The row then names this message as its source and its ``as_of`` moves forward.
        ``unrecorded`` values are the row's own bookkeeping: written where they differ, with no
        history, and no change of source or update time.
        """
        driver_table = self._statements.table(table)
        binds = driver_table.binds
        changes = {}
        for name, value in values.items():
            if value is KEEP or name in _BOOKKEEPING:
                continue
            if isinstance(value, str) and binds[name][0] is not None:
                value = _fit_text(value, binds[name][0])
            old = row[name]
            if old != value and not _same(
                old, value
            ):  # equal values are the same; _same also takes close floats as the same
                changes[name] = value
        if changes:
            if (
                "message_id" in driver_table.stamps
                and self.message_id is not None
                and row["message_id"] != self.message_id
            ):
                changes["message_id"] = self.message_id
            for name, value in changes.items():
                self.history(table.name, row["id"], name, row[name], value, cause=cause)
            if "updated_at" in driver_table.binds:
                changes["updated_at"] = self.now
        # Even a message that changes nothing confirms the row as of its time: an older one must not overwrite it.
        changed = bool(changes)
        if "as_of" in driver_table.stamps and self.message_time > row["as_of"]:
            changes["as_of"] = self.message_time
        for name, value in (unrecorded or {}).items():
            if row[name] != value:
                changes[name] = value
        if changes:
            names = tuple(changes)
            self._execute(
                self._statements.update(driver_table, names),
                [*driver_table.parameters(changes, self._times), row["id"]],
            )
        return changed

    def history(
        self, entity: str, entity_id: int, field: str, old: Any, new: Any, *, cause: str | None = None
    ) -> None:
        """Record one change of one value."""
        self.insert(
            schema.history,
            {
                "entity": entity,
                "entity_id": entity_id,
                "field": field[:60],
                "old_value": history_text(old),
                "new_value": history_text(new),
                "cause": (cause or self.cause)[:60],
                "at": self.now,
                "message_id": self.message_id,
            },
        )

    def fit_list(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A patient's list (names, addresses, ...) as ``replace_list`` compares and stores it: the content columns of each row, fitted."""
        driver_table = self._statements.table(table)
        content = self._list_content(driver_table)
        return [driver_table.fit({name: row.get(name) for name in content}) for row in rows]

    def replace_list(
        self, table: sa.Table, patient_id: int, fitted: list[dict[str, Any]], *, new_patient: bool = False
    ) -> bool:
        """Make ``fitted`` (``fit_list``'s rows, in order) the patient's rows of ``table``; one history row (JSON lists) when they differ.

        A patient created by this message has no previous value, so nothing goes to history.
        """
        content = self._list_content(self._statements.table(table))
        old = (
            []
            if new_patient
            else [
                {name: row[name] for name in content}
                for row in self.rows(table, {"patient_id": patient_id}, order=("position", "id"))
            ]
        )
        if old == fitted:
            return False
        if not new_patient:
            self.history(schema.patients.name, patient_id, table.name.removeprefix("record_"), old, fitted)
            self.delete(table, {"patient_id": patient_id})
        self.insert_many(
            table,
            (
                {**values, "patient_id": patient_id, "position": position}
                for position, values in enumerate(fitted, start=1)
            ),
        )
        return True

    @staticmethod
    def _list_content(table: _Table) -> list[str]:
        return [
            name
            for name in table.columns
            if name not in _BOOKKEEPING and name not in ("patient_id", "position")
        ]
