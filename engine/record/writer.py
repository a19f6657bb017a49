"""Writes to the record inside one transaction, each change keeping its previous value in record_history."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.record import schema
from engine.record.extract import KEEP
from engine.store.schema import fit_text

__all__ = ["Writer", "history_text"]

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


def _fit(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """``fit_text`` after replacing lone surrogates (bytes the message's charset could not decode), which no database stores."""
    cleaned = {
        name: value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) and not value.isascii() else value
        for name, value in values.items()
    }
    return fit_text(table, cleaned)


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) or isinstance(new, float):
        return old is not None and new is not None and abs(float(old) - float(new)) < 1e-9
    return old == new


class Writer:
    """One unit of work for one message (or one operator action): inserts, updates with history, list replacements."""

    def __init__(self, connection: sa.Connection, *, message_id: int | None, cause: str, now: datetime, message_time: datetime):
        self.connection = connection
        self.message_id = message_id
        self.cause = cause[:60]
        self.now = now
        self.message_time = message_time

    def select_one(self, table: sa.Table, *criteria) -> sa.RowMapping | None:
        """The first row (lowest id) matching every criterion, or None."""
        return self.connection.execute(sa.select(table).where(*criteria).order_by(table.c.id).limit(1)).mappings().first()

    def insert(self, table: sa.Table, values: dict[str, Any]) -> int:
        """Insert a row (KEEP counts as None) stamped with this message and its time; returns its id."""
        row = {name: (None if value is KEEP else value) for name, value in values.items()}
        if "message_id" in table.c and "message_id" not in row:
            row["message_id"] = self.message_id
        if "as_of" in table.c and "as_of" not in row:
            row["as_of"] = self.message_time
        result = self.connection.execute(table.insert().values(**_fit(table, row)))
        return result.inserted_primary_key[0]

    def is_stale(self, row: sa.RowMapping) -> bool:
        """Whether this message is older than the data the row holds (so it must not overwrite it)."""
        return self.message_time < row["as_of"]

    def update(self, table: sa.Table, row: sa.RowMapping, values: dict[str, Any], *, cause: str | None = None) -> bool:
        """Write the sent values (not KEEP) that differ from ``row``, each with a history row; True when something changed.

        The row then names this message as its source and its ``as_of`` moves forward.
        """
        sent = _fit(table, {name: value for name, value in values.items() if value is not KEEP})
        changes = {name: value for name, value in sent.items() if name not in _BOOKKEEPING and not _same(row[name], value)}
        if changes:
            if "message_id" in table.c and self.message_id is not None and row["message_id"] != self.message_id:
                changes["message_id"] = self.message_id
            for name, value in changes.items():
                self.history(table.name, row["id"], name, row[name], value, cause=cause)
            if "updated_at" in table.c:
                changes["updated_at"] = self.now
        # Even a message that changes nothing confirms the row as of its time: an older one must not overwrite it.
        stamp = {"as_of": self.message_time} if "as_of" in table.c and self.message_time > row["as_of"] else {}
        if changes or stamp:
            self.connection.execute(table.update().where(table.c.id == row["id"]).values(**changes, **stamp))
        return bool(changes)

    def history(self, entity: str, entity_id: int, field: str, old: Any, new: Any, *, cause: str | None = None) -> None:
        """Record one change of one value."""
        self.connection.execute(schema.history.insert().values(
            entity=entity, entity_id=entity_id, field=field[:60], old_value=history_text(old), new_value=history_text(new),
            cause=(cause or self.cause)[:60], at=self.now, message_id=self.message_id,
        ))

    def replace_list(self, table: sa.Table, patient_id: int, rows: list[dict[str, Any]], *, new_patient: bool = False) -> bool:
        """Make ``rows`` (in order) the patient's rows of ``table``; one history row (JSON lists) when they differ.

        A patient created by this message has no previous value, so nothing goes to history.
        """
        content = [c.name for c in table.c if c.name not in _BOOKKEEPING and c.name not in ("patient_id", "position")]
        fitted = [_fit(table, {name: row.get(name) for name in content}) for row in rows]
        old_rows = self.connection.execute(sa.select(table).where(table.c.patient_id == patient_id).order_by(table.c.position, table.c.id)).mappings().all()
        old = [{name: row[name] for name in content} for row in old_rows]
        if old == fitted:
            return False
        if not new_patient:
            self.history(schema.patients.name, patient_id, table.name.removeprefix("record_"), old, fitted)
        self.connection.execute(table.delete().where(table.c.patient_id == patient_id))
        for position, values in enumerate(fitted, start=1):
            self.insert(table, {**values, "patient_id": patient_id, "position": position})
        return True
