"""Writes of the record inside one transaction, each change keeping its previous value in record_history.

Statements go to the database driver directly, through the store's driver layer
(``engine.store.driver``: ``Tables``, ``TableCursor``): a message makes dozens of them, and
SQLAlchemy's work around each cost several times the statement itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.record import schema
from engine.record.extract import KEEP
from engine.record.pending import Pending
from engine.store.cipher import CLEAR, Cipher
from engine.store.driver import TableCursor, Tables, fit_text

__all__ = ["Differs", "Statements", "Writer", "history_text", "list_digest"]

# Columns every fact table manages itself; never compared or recorded as a change of content.
_BOOKKEEPING = frozenset({"id", "as_of", "message_id", "created_at", "updated_at"})
# The tables whose new rows the Writer follows, each with the column that names such a row in the
# tables below it: a row just created has no rows below it but those the writer inserts.
_PARENT_COLUMNS = {
    schema.patients.name: "patient_id",
    schema.visits.name: "visit_id",
    schema.appointments.name: "appointment_id",
    schema.orders.name: "order_id",
}


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
    """A digest of a patient's list as ``Writer.fit_list`` gives it: equal digests, equal lists.

    For record_patients.list_digests.
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


class Statements:
    """The record's statements for one database dialect, built once by the driver, shared by every Writer."""

    def __init__(self, dialect: sa.Dialect, cipher: Cipher = CLEAR):
        """``cipher`` seals the record's person data written and opens it read (engine.store.cipher)."""
        self.tables = Tables(dialect, null=KEEP, cipher=cipher)
        self._stamping: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._contents: dict[str, tuple[str, ...]] = {}

    def list_content(self, table: sa.Table) -> tuple[str, ...]:
        """The columns of a patient's list (names, addresses, ...) that ``Writer.replace_list`` compares."""
        found = self._contents.get(table.name)
        if found is None:
            found = self._contents[table.name] = tuple(
                column.name
                for column in table.c
                if column.name not in _BOOKKEEPING and column.name not in ("patient_id", "position")
            )
        return found

    def stamping(self, table: sa.Table) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The columns of ``table`` each row takes from its message (``message_id``, ``as_of``).

        And those that may name a row a Writer created (``_PARENT_COLUMNS``).
        """
        found = self._stamping.get(table.name)
        if found is None:
            found = self._stamping[table.name] = (
                tuple(name for name in ("message_id", "as_of") if name in table.c),
                tuple(name for name in _PARENT_COLUMNS.values() if name in table.c),
            )
        return found


def _key(key: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], dict[str, Any]]:
    """A key's shape (column, operator) and values to compare: None is IS NULL, Differs(v) is <> v."""
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
    """One unit of work for one message (or operator action): selects, inserts, updates with history, lists.

    ``connection`` is in a transaction; every statement runs on its driver connection, inside it.
    With ``pending`` (shared by the Writers of one transaction), the rows whose ids are not asked
    for (``insert_many``, ``add``) wait there and go in together (engine/record/pending.py).
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
        pending: Pending | None = None,
    ):
        self._connection = connection
        self.message_id = message_id
        self.cause = cause[:60]
        self.now = now
        self.message_time = message_time
        self._statements = statements
        self._tables = statements.tables
        self._pending = pending
        self._cursor = pending.cursor if pending is not None else TableCursor(connection, statements.tables)
        # Rows this writer created (patients, visits, appointments, orders), by (the column that
        # names them, their id), each with the tables it inserted rows under them into, and those
        # rows as inserted; None for a table it updated rows of (an update may have moved one to
        # them, or changed one). Only those tables can hold a row of theirs, and only those rows.
        # A delete leaves rows listed that are no longer: a list holds at least the rows. A
        # statement the writer does not follow (the connection used directly) ends all this.
        self._created: dict[tuple[str, int], dict[str, list[Mapping[str, Any]] | None]] = {}

    @property
    def connection(self) -> sa.Connection:
        """The connection, for statements of its own: from then on, no table is known to hold no row.

        Every pending row is written first.
        """
        if self._pending is not None:
            self._pending.write()
        self._created.clear()
        return self._connection

    def reading(self, table: sa.Table, key: Mapping[str, Any]) -> sa.Connection:
        """The connection, for a select of one's own of the rows of ``table`` matching ``key`` (as ``rows``).

        The pending rows it could find are written first; a read changes nothing the writer knows.
        """
        self._settle(table, (key,))
        return self._connection

    def _settle(self, table: sa.Table, keys: Sequence[Mapping[str, Any]]) -> None:
        """Write the pending rows of ``table`` if a statement on rows matching ``keys`` could touch one."""
        if self._pending is not None and self._pending.could_see(table, keys):
            self._pending.write(table)

    def rows(
        self,
        table: sa.Table,
        *keys: Mapping[str, Any],
        order: tuple[str, ...] = ("id",),
        descending: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The rows whose columns equal those of one of the ``keys``, as dicts, in ``order``.

        In a key, None is IS NULL and ``Differs(v)`` is <> v.
        Many keys may take several selects (TableCursor.select): the rows are then in order within
        each, and ``limit`` counts in each.
        """
        if self._created and all(self._holds_none(table, key) for key in keys):
            return []
        self._settle(table, keys)
        return self._cursor.select(
            table, [_key(key) for key in keys], order=order, descending=descending, limit=limit
        )

    def _holds_none(self, table: sa.Table, key: Mapping[str, Any]) -> bool:
        """Whether ``key`` names a row this writer created, none of whose rows in ``table`` it could match.

        A new patient's allergies, visits, coverages, ..., a new visit's diagnoses, a new
        appointment's resources are those its message inserted: they need not be looked for in the
        database (nor the pending ones written) to find that a second allergy of another code is new.
        """
        created = self._created
        for column, value in key.items():
            under = created.get((column, value))
            if under is not None:
                rows = under.get(table.name, ())
                if rows is not None and not (rows and self._could_match(table, rows, key)):
                    return True
        return False

    def _could_match(self, table: sa.Table, rows: list[Mapping[str, Any]], key: Mapping[str, Any]) -> bool:
        """Whether a select by ``key`` could find one of ``rows`` (as inserted) in the database.

        Only a NULL where the key compares with a value, or a plain text or integer that differs
        from the row's, rules a row out: anything else (a time, IS NULL, <>, a column left to its
        default) could match, and the database is asked.
        """
        fitted = None
        for row in rows:
            for name, value in key.items():
                if value is None or name not in row:
                    continue
                held = row[name]
                if held is None or held is KEEP:
                    break  # NULL is neither equal to a value nor different from it
                elif isinstance(value, str) and isinstance(held, str):
                    driver_table = self._tables.table(table)
                    fitted = fitted or driver_table.fit(key)
                    if driver_table.fit({name: held})[name] != fitted[name]:
                        break
                elif type(value) is int and type(held) is int and value != held:
                    break
            else:
                return True
        return False

    def identified(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str, dict[str, Any]]]:
        """Each (authority, value) of ``keys`` the record knows, with the row of the patient it is linked to.

        In identifier id order (as ``rows``: within each select).
        """
        self._settle(schema.identifiers, [{"value": value} for _, value in keys])
        return self._cursor.parents(
            schema.identifiers, schema.patients, "patient_id", ("authority", "value"), keys
        )

    def select_one(self, table: sa.Table, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row (lowest id) matching ``key``, or None."""
        found = self.rows(table, key, limit=1)
        return found[0] if found else None

    def first(
        self, table: sa.Table, rows: Iterable[Mapping[str, Any]], key: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """The first of ``rows`` (read by ``rows``) that ``select_one(table, key)`` would select among them.

        None is IS NULL; no ``Differs``.
        The key's values are compared as the database holds them (fitted), so a lookup in rows
        read once answers as a select would.
        """
        fitted = self._tables.table(table).fit(key)
        for row in rows:
            if all(
                row[name] is None if value is None else row[name] == value for name, value in fitted.items()
            ):
                return row
        return None

    def insert(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert a row (KEEP counts as None) stamped with this message and its time; returns its id.

        The table's pending rows go first: ids follow the order rows are given in.
        """
        if self._pending is not None and self._pending.holds(table):
            self._pending.write(table)
        row_id = self._cursor.insert(table, self._stamped(table, (values,))[0])
        parent = _PARENT_COLUMNS.get(table.name)
        if parent is not None:
            self._created[parent, row_id] = {}
        return row_id

    def insert_many(self, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert rows as ``insert`` does, in order (pending, with ``pending``); no ids."""
        if self._pending is not None:
            self._pending.add(table, self._stamped(table, rows))
        else:
            self._cursor.insert_many(table, self._stamped(table, rows))

    def add(self, table: sa.Table, values: Mapping[str, Any]) -> None:
        """Insert one row as ``insert_many`` does: its id is not asked for."""
        self.insert_many(table, (values,))

    def _stamped(self, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The rows, each with this message and its time where it names none."""
        stamps, parents = self._statements.stamping(table)
        # first, so that a row's own values stand (and its columns come in one copy)
        stamp = {name: self.message_id if name == "message_id" else self.message_time for name in stamps}
        created = self._created
        stamped = []
        for values in rows:
            row = {**stamp, **values}
            if created:
                for column in parents:
                    under = created.get((column, row.get(column)))  # type: ignore[arg-type]
                    if under is not None:
                        listed = under.setdefault(table.name, [])
                        if listed is not None:
                            listed.append(row)
            stamped.append(row)
        return stamped

    def delete(self, table: sa.Table, key: Mapping[str, Any]) -> None:
        """Delete the rows matching ``key``; no statement where ``rows`` would find none without one.

        A delete never gives a row new rows under it: what the writer knows stays true.
        """
        if self._created and self._holds_none(table, key):
            return
        self._settle(table, (key,))
        self._cursor.delete(table, *_key(key))

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
        """Write the sent values (not KEEP) that differ from ``row``, each with history; True if any did.

        The row then names this message as its source and its ``as_of`` moves forward.
        ``unrecorded`` values are the row's own bookkeeping: written where they differ, with no
        history, and no change of source or update time.
        """
        binds = self._tables.table(table).binds
        stamps = self._statements.stamping(table)[0]
        changes = {}
        for name, value in values.items():
            if value is KEEP or name in _BOOKKEEPING:
                continue
            text, length, _ = binds[name]
            if text and isinstance(value, str):
                value = fit_text(value, length)
            old = row[name]
            # equal values are the same; _same also takes close floats as the same
            if old != value and not _same(old, value):
                changes[name] = value
        if changes:
            if (
                "message_id" in stamps
                and self.message_id is not None
                and row["message_id"] != self.message_id
            ):
                changes["message_id"] = self.message_id
            for name, value in changes.items():
                self.history(table.name, row["id"], name, row[name], value, cause=cause)
            if "updated_at" in binds:
                changes["updated_at"] = self.now
        # Even a message that changes nothing confirms the row as of its time: an older one must not
        # overwrite it.
        changed = bool(changes)
        if "as_of" in stamps and self.message_time > row["as_of"]:
            changes["as_of"] = self.message_time
        for name, value in (unrecorded or {}).items():
            if row[name] != value:
                changes[name] = value
        if changes:
            for under in self._created.values():
                under[table.name] = None  # the row may now be under one of them, or be one of theirs
            self._cursor.update(table, changes, row["id"])
        return changed

    def history(
        self, entity: str, entity_id: int, field: str, old: Any, new: Any, *, cause: str | None = None
    ) -> None:
        """Record one change of one value."""
        self.add(
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
        """A patient's list (names, addresses, ...) as ``replace_list`` compares and stores it.

        The content columns of each row, fitted.
        """
        driver_table = self._tables.table(table)
        content = self._statements.list_content(table)
        return [driver_table.fit(row, content) for row in rows]

    def replace_list(
        self, table: sa.Table, patient_id: int, fitted: list[dict[str, Any]], *, new_patient: bool = False
    ) -> bool:
        """Make ``fitted`` (``fit_list``'s rows, in order) the patient's rows of ``table``, with history.

        One history row (JSON lists).
        A patient created by this message has no previous value, so nothing goes to history.
        """
        content = self._statements.list_content(table)
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
