"""Reading the record through SQLAlchemy (any store): find patients, one patient whole, a history (blocking).

``RecordReads`` is the record's ``RecordReader`` (``engine.record.view``, which makes a person of
its rows); on a SQLite store the read-only commands use ``SQLiteReads.record`` instead, which
reads the same rows with the stdlib's sqlite3.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa

from engine.record import schema, view
from engine.store.cipher import SEALED, cipher_of
from engine.store.driver import store_errors
from engine.store.reads import PatientSearch

__all__ = ["RecordReads", "find_patients", "get_patient", "patient_history"]


class RecordReads:
    """The record's reads on a SQLAlchemy engine, for ``patient find`` and ``show`` on any store."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    @contextmanager
    def record(self, action: str) -> Iterator[view.RecordReader]:
        """The record's reads on one connection; errors told as ``action``."""
        with store_errors(action), self._engine.connect() as connection:
            yield _Rows(connection)


class _Rows:
    """``view.RecordReader`` on a SQLAlchemy connection."""

    def __init__(self, connection: sa.Connection):
        self._connection = connection
        self.cipher = cipher_of(connection)

    def patient_ids(self, search: PatientSearch) -> list[int]:
        p, i, n = schema.patients, schema.identifiers, schema.names
        query = sa.select(p.c.id).where(p.c.merged_into_id.is_(None))
        if search.identifier is not None:
            owned = sa.select(i.c.patient_id).where(i.c.value == search.identifier)
            if search.authority is not None:
                owned = owned.where(i.c.authority == search.authority)
            query = query.where(p.c.id.in_(owned))
        if search.name_pattern is not None:
            # Clear keys by prefix: all of them without encryption, those rekey has not hashed yet with it.
            matches = [
                n.c.family_key.like(search.name_pattern, escape="\\"),
                n.c.given_key.like(search.name_pattern, escape="\\"),
            ]
            if search.name_blind is not None:
                matches += [n.c.family_key == search.name_blind, n.c.given_key == search.name_blind]
            query = query.where(p.c.id.in_(sa.select(n.c.patient_id).where(sa.or_(*matches))))
        if search.birth_date is not None:
            query = query.where(p.c.birth_date == search.birth_date)
        return list(self._connection.execute(query.order_by(p.c.id).limit(search.limit)).scalars())

    def rows(
        self,
        table: str,
        by: Sequence[str],
        ids: Sequence[int],
        *,
        order: Sequence[str] = ("id",),
        drop: Collection[str] = ("patient_id",),
        columns: Sequence[str] | None = None,
    ) -> list[dict]:
        if not ids:
            return []
        t = schema.TABLES[table]
        selected = [t.c[name] for name in (columns or t.c.keys()) if name not in drop]
        query = sa.select(*selected).where(sa.or_(*(t.c[name].in_(ids) for name in by)))
        return _opened(self._connection, t, query.order_by(*(t.c[name] for name in order)))


def _opened(connection: sa.Connection, table: sa.Table, query: sa.Select) -> list[dict]:
    """The rows of ``query`` on ``table`` as dicts, sealed person data opened."""
    opened = cipher_of(connection).open_text
    return [
        {key: opened(value) if table.c[key].info.get(SEALED) else value for key, value in row.items()}
        for row in connection.execute(query).mappings()
    ]


def find_patients(engine: sa.Engine, **criteria) -> list[dict]:
    """Patients (not merged away) matching every criterion given (``view.find_patients``), as summaries."""
    with RecordReads(engine).record("searching patients") as reader:
        return view.find_patients(reader, **criteria)


def get_patient(engine: sa.Engine, patient_id: int) -> dict | None:
    """Everything the record holds about one patient (``view.get_patient``); None for an unknown patient."""
    with RecordReads(engine).record(f"reading patient {patient_id}") as reader:
        return view.get_patient(reader, patient_id)


def patient_history(engine: sa.Engine, patient_id: int, limit: int = 500) -> list[dict]:
    """The changes of a patient's values and of its own rows (visits, results, allergies ...), newest first.

    Each is a record_history row: entity (table), entity_id, field, old_value, new_value, cause,
    at, message_id. A corrected result shows here as its observation's old and new value.
    """
    h = schema.history
    owned = [
        sa.and_(
            h.c.entity == table.name,
            h.c.entity_id.in_(sa.select(table.c.id).where(table.c.patient_id == patient_id)),
        )
        for table in schema.metadata.sorted_tables
        if table.name.startswith("record_") and "patient_id" in table.c and "id" in table.c
    ]
    mine = sa.or_(sa.and_(h.c.entity == schema.patients.name, h.c.entity_id == patient_id), *owned)
    with store_errors(f"reading the history of patient {patient_id}"), engine.connect() as connection:
        query = sa.select(h).where(mine).order_by(h.c.at.desc(), h.c.id.desc()).limit(limit)
        return [view.plain(row) for row in _opened(connection, h, query)]
