"""Rows the Writers of one transaction insert without asking their ids, written together per table.

A chunk of messages is applied in one transaction, and most rows a message inserts are never
asked for again by id: its patient's names, addresses, identifiers, its allergies, diagnoses,
coverages, observations, history. One INSERT of each table for the chunk costs less than one per
message and table (the driver's work around each statement, and SQLite's). A row waits here until
the chunk is written (``write``), or until a statement could see it: a select whose key could
match it (``could_see``), a delete, an insert whose id is asked for (so ids keep the order rows
were given in), any statement of one's own on the connection (``Writer.connection``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.errors import StoreError
from engine.record import schema
from engine.store.driver import TableCursor, Tables, fit_text, store_errors

__all__ = ["Pending", "RowsRefused"]

# The columns a read names a row by, whose values the pending rows of each table are kept by: the
# row they belong to, and a patient's identifier value and name key (the identity lookups).
_LINKS = ("patient_id", "visit_id", "appointment_id", "order_id")
_LOOKED_UP = {schema.identifiers.name: ("value",), schema.names.name: ("family_key", "given_key")}


class RowsRefused(Exception):
    """The database refused rows written together for several messages: which one's is not known."""


class Pending:
    """Rows waiting to be inserted, per table in the order given, and the key values they hold.

    ``together``: the rows may be several messages' (a failure raises RowsRefused); otherwise
    they are written before the next message begins, and a failure is its own (StoreError).
    """

    def __init__(self, tables: Tables, cursor: TableCursor, *, together: bool):
        self.cursor = cursor
        self._tables = tables
        self._together = together
        self._rows: dict[str, tuple[sa.Table, list[Mapping[str, Any]]]] = {}
        # table -> column -> the values (fitted) its pending rows hold in that column
        self._held: dict[str, dict[str, set[Any]]] = {}
        # table -> the columns its pending rows are kept by -> their text length (0: not text)
        self._columns: dict[str, dict[str, int | None]] = {}

    def holds(self, table: sa.Table) -> bool:
        """Whether rows of ``table`` are waiting."""
        return table.name in self._rows

    def add(self, table: sa.Table, rows: list[Mapping[str, Any]]) -> None:
        """Keep ``rows`` (complete, as ``TableCursor.insert_many`` takes them) to insert later, in order."""
        found = self._rows.get(table.name)
        if found is None:
            found = self._rows[table.name] = (table, [])
            self._held[table.name] = {column: set() for column in self._looked_up(table)}
        found[1].extend(rows)
        held = self._held[table.name]
        for column, length in self._columns[table.name].items():
            values = held[column]
            for row in rows:
                value = row.get(column)
                if length != 0 and isinstance(value, str):  # text, compared as the database holds it
                    value = fit_text(value, length)
                values.add(value)

    def _looked_up(self, table: sa.Table) -> dict[str, int | None]:
        """The columns of ``table`` its pending rows are kept by, each with its text length (0: not text)."""
        found = self._columns.get(table.name)
        if found is None:
            binds = self._tables.table(table).binds
            found = self._columns[table.name] = {
                column: binds[column][1] if binds[column][0] else 0
                for column in (*_LINKS, *_LOOKED_UP.get(table.name, ()))
                if column in binds
            }
        return found

    def could_see(self, table: sa.Table, keys: Iterable[Mapping[str, Any]]) -> bool:
        """Whether a statement on the rows of ``table`` matching any of ``keys`` could touch a pending row.

        A key (as ``Writer.rows`` takes it) misses them all when a column they are kept by is equal
        in it to a value none of them holds; any other could match.
        """
        held = self._held.get(table.name)
        if held is None:
            return False
        lengths = self._columns[table.name]
        for key in keys:
            for column, values in held.items():
                value, length = key.get(column), lengths[column]
                if length != 0 and isinstance(value, str):
                    value = fit_text(value, length)
                elif length != 0 or not isinstance(value, int):
                    continue  # IS NULL, <>, not in the key, or compared otherwise: any row could match
                if value not in values:
                    break  # this key misses every pending row
            else:
                return True
        return False

    def write(self, table: sa.Table | None = None) -> None:
        """Insert the waiting rows of ``table`` (of every table, in the order they first came, if None)."""
        names = list(self._rows) if table is None else [table.name]
        for name in names:
            found = self._rows.pop(name, None)
            if found is None:
                continue
            del self._held[name]
            try:
                self.cursor.insert_many(*found)
            except Exception as error:
                self._refused(name, error)

    def _refused(self, name: str, error: Exception) -> None:
        """Raise what the failure to write the rows of table ``name`` means for the messages they are from.

        RowsRefused when written together (unless the database failed: StoreError, transient).
        """
        try:
            with store_errors(f"writing the rows of {name}"):
                raise error
        except StoreError as refused:
            if refused.transient or not self._together:
                raise
            raise RowsRefused() from refused
        except Exception:
            if not self._together:
                raise
            raise RowsRefused() from error
