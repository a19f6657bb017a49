"""Reading the record: find patients, and one patient with everything, as JSON-ready dicts (blocking)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.record import schema
from engine.record.identity import normalise
from engine.store.cipher import SEALED, Cipher, cipher_of
from engine.store.driver import store_errors

__all__ = ["MAX_RESULTS", "find_patients", "get_patient", "patient_history", "plain"]

MAX_RESULTS = 100


def plain(value: Any) -> Any:
    """A value as JSON has it: ISO text for times, text for decimals; dicts and lists converted inside."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict) or isinstance(value, sa.RowMapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _rows(
    connection: sa.Connection, table: sa.Table, *criteria, order=None, drop=("patient_id",), limit=None
) -> list[dict]:
    """The rows of ``table`` matching ``criteria`` as JSON-ready dicts, sealed person data opened."""
    query = sa.select(table).where(*criteria).order_by(*(order if order is not None else [table.c.id]))
    if limit is not None:
        query = query.limit(limit)
    opened = cipher_of(connection).open_text
    return [
        {
            key: opened(value) if table.c[key].info.get(SEALED) else plain(value)
            for key, value in row.items()
            if key not in drop
        }
        for row in connection.execute(query).mappings()
    ]


def _named(key: str, cipher: Cipher) -> sa.Select:
    """The ids of patients with a family or given name starting with ``key`` (normalised).

    With encryption the name keys are keyed hashes: a name must then match a whole key (a key
    still clear, written before encryption, matches by prefix until rekey hashes it).
    """
    n = schema.names
    pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    # Clear keys by prefix: all of them without encryption, those rekey has not hashed yet with it.
    matches = [n.c.family_key.like(pattern, escape="\\"), n.c.given_key.like(pattern, escape="\\")]
    blind = cipher.blind(key)
    if blind != key:
        matches += [n.c.family_key == blind, n.c.given_key == blind]
    return sa.select(n.c.patient_id).where(sa.or_(*matches))


def find_patients(
    engine: sa.Engine,
    *,
    identifier: str | None = None,
    authority: str | None = None,
    name: str | None = None,
    birthdate: str | None = None,
    limit: int = MAX_RESULTS,
) -> list[dict]:
    """Patients (not merged away) matching every criterion given; at most ``limit``, lowest id first.

    Criteria: an identifier value (and its authority), a name prefix (family or given, ignoring
    case and accents), an ISO birth date.
    """
    p, i = schema.patients, schema.identifiers
    query = sa.select(p.c.id).where(p.c.merged_into_id.is_(None))
    if identifier:
        owned = sa.select(i.c.patient_id).where(i.c.value == identifier)
        if authority:
            owned = owned.where(i.c.authority == authority)
        query = query.where(p.c.id.in_(owned))
    if name:
        key = normalise(name)
        if key:
            query = query.where(p.c.id.in_(_named(key, cipher_of(engine))))
    if birthdate:
        query = query.where(p.c.birth_date == birthdate)
    with store_errors("searching patients"), engine.connect() as connection:
        ids = list(
            connection.execute(query.order_by(p.c.id).limit(max(1, min(limit, MAX_RESULTS)))).scalars()
        )
        return [_summary(connection, patient_id) for patient_id in ids]


def _summary(connection: sa.Connection, patient_id: int) -> dict:
    p = schema.patients
    row = (
        connection.execute(sa.select(p.c.id, p.c.birth_date, p.c.sex).where(p.c.id == patient_id))
        .mappings()
        .one()
    )
    names = _rows(
        connection,
        schema.names,
        schema.names.c.patient_id == patient_id,
        order=[schema.names.c.position],
        drop=("id", "patient_id", "position", "family_key", "given_key", "message_id"),
    )
    identifiers = _rows(
        connection,
        schema.identifiers,
        schema.identifiers.c.patient_id == patient_id,
        drop=("id", "patient_id", "link_reason", "linked_at", "message_id", "source_system"),
    )
    return {**plain(row), "names": names, "identifiers": identifiers}


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
        return _rows(connection, h, mine, order=[h.c.at.desc(), h.c.id.desc()], drop=(), limit=limit)


def _newer_in_priors(connection: sa.Connection, patient: dict) -> dict[str, dict]:
    """The demographics that patients merged into ``patient`` had from a newer message: {name: that row}.

    Each column and list (``schema.DEMOGRAPHICS``) is the one the newest message sent, by
    ``sent_at`` (a row without it: its ``as_of`` for all); the survivor's own on a tie.
    """
    p = schema.patients
    rows, frontier = [patient], [patient["id"]]
    while frontier and len(rows) <= MAX_RESULTS:  # a cycle can only come from a bug: stop
        found = _rows(connection, p, p.c.merged_into_id.in_(frontier), drop=("list_digests",))
        frontier = [row["id"] for row in found if all(row["id"] != seen["id"] for seen in rows)]
        rows += [row for row in found if row["id"] in frontier]
    if len(rows) == 1:
        return {}

    def sent(row: dict, name: str) -> datetime | None:
        times = row["sent_at"]
        if times is None:
            return datetime.fromisoformat(row["as_of"])
        return datetime.fromisoformat(times[name]) if name in times else None

    newer = {}
    for name in schema.DEMOGRAPHICS:
        best, best_at = patient, sent(patient, name)
        for row in rows[1:]:
            at = sent(row, name)
            if at is not None and (best_at is None or at > best_at):
                best, best_at = row, at
        if best is not patient:
            newer[name] = best
    return newer


def get_patient(engine: sa.Engine, patient_id: int) -> dict | None:
    """Everything the record holds about one patient: its own rows, not those of patients merged into it,
    but for its demographics, each the newest among its own and theirs (``_newer_in_priors``).

    None for an unknown patient.
    """
    with store_errors(f"reading patient {patient_id}"), engine.connect() as connection:
        found = _rows(connection, schema.patients, schema.patients.c.id == patient_id, drop=("list_digests",))
        if not found:
            return None
        patient = found[0]
        newer = _newer_in_priors(connection, patient)
        patient.update({name: row[name] for name, row in newer.items() if name in patient})
        del patient["sent_at"]
        patient["merged_into"] = patient.pop("merged_into_id")
        s = schema

        def own(table: sa.Table, **kwargs) -> list[dict]:
            return _rows(connection, table, table.c.patient_id == patient_id, **kwargs)

        patient["identifiers"] = own(s.identifiers)
        for table in (s.names, s.addresses, s.telecoms, s.contacts):
            holder = newer[table.name]["id"] if table.name in newer else patient_id
            patient[table.name.removeprefix("record_")] = _rows(
                connection,
                table,
                table.c.patient_id == holder,
                order=[table.c.position],
                drop=("patient_id", "family_key", "given_key") if table is s.names else ("patient_id",),
            )
        patient["visits"] = own(s.visits)
        patient["allergies"] = own(s.allergies)
        patient["diagnoses"] = own(s.diagnoses)
        patient["procedures"] = own(s.procedures)
        patient["coverages"] = own(s.coverages)
        appointments = own(s.appointments)
        for appointment in appointments:
            appointment["resources"] = _rows(
                connection,
                s.appointment_resources,
                s.appointment_resources.c.appointment_id == appointment["id"],
                drop=("appointment_id",),
            )
        patient["appointments"] = appointments
        orders = own(s.orders)
        for order in orders:
            order["observations"] = _rows(
                connection,
                s.observations,
                s.observations.c.order_id == order["id"],
                drop=("patient_id", "order_id"),
            )
        patient["orders"] = orders
        patient["transactions"] = own(s.transactions)
        patient["merges"] = _rows(
            connection,
            s.merges,
            sa.or_(s.merges.c.survivor_id == patient_id, s.merges.c.prior_id == patient_id),
            drop=(),
        )
        patient["conflicts"] = _rows(
            connection,
            s.conflicts,
            sa.or_(s.conflicts.c.patient_id == patient_id, s.conflicts.c.other_patient_id == patient_id),
            drop=(),
        )
        return patient
