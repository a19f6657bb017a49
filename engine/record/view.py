"""A person as the record shows them (``patient find`` and ``show``, the API), made from either reader's rows.

Two readers give the rows: ``engine.record.query`` through SQLAlchemy (any store) and, on a SQLite
store, ``engine.store.driver.record_reads`` with the stdlib's sqlite3 (so that the commands start
without importing SQLAlchemy). Each is a ``RecordReader``; what is made of their rows is here,
once, and imports neither.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from engine.record.person import DEMOGRAPHICS, LISTS, normalise
from engine.store.cipher import Cipher
from engine.store.reads import PatientSearch

__all__ = ["MAX_RESULTS", "RecordReader", "find_patients", "get_patient", "patient_search", "plain"]

MAX_RESULTS = 100


class RecordReader(Protocol):
    """The record's reads a person is made of (inside one read of the store)."""

    cipher: Cipher

    def patient_ids(self, search: PatientSearch) -> list[int]:
        """The ids of the patients ``search`` finds, lowest first, at most its limit."""

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
        """The rows of ``table`` whose column ``by`` (any of them) is one of ``ids``, in ``order``.

        {column: value} for ``columns`` (else all) but ``drop``; values as SQLAlchemy's types read
        them, person data opened.
        """


def plain(value: Any) -> Any:
    """A value as JSON has it: ISO text for times, text for decimals; dicts and lists converted inside."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _plain_rows(reader: RecordReader, table: str, by: str | Sequence[str], ids: Sequence[int], **kwargs):
    """``reader.rows`` as JSON-ready dicts."""
    return [plain(row) for row in reader.rows(table, (by,) if isinstance(by, str) else by, ids, **kwargs)]


def patient_search(
    cipher: Cipher,
    *,
    identifier: str | None = None,
    authority: str | None = None,
    name: str | None = None,
    birthdate: str | None = None,
    limit: int | None = None,
) -> PatientSearch:
    """The search for patients matching every criterion given: an identifier value (and its authority),
    a name prefix (family or given, ignoring case and accents), an ISO birth date.

    With encryption the name keys are keyed hashes: a name must then match a whole key (a key
    still clear, written before encryption, matches by prefix until rekey hashes it).
    """
    key = normalise(name) if name else ""
    blind = cipher.blind(key) if key else None
    return PatientSearch(
        identifier=identifier or None,
        authority=(authority or None) if identifier else None,
        name_pattern=key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" if key else None,
        name_blind=blind if blind != key else None,
        birth_date=birthdate or None,
        limit=max(1, min(MAX_RESULTS if limit is None else limit, MAX_RESULTS)),
    )


def find_patients(
    reader: RecordReader,
    *,
    identifier: str | None = None,
    authority: str | None = None,
    name: str | None = None,
    birthdate: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Patients (not merged away) matching every criterion given (``patient_search``); at most ``limit``,
    lowest id first. Each is a summary: id, birth date, sex, names and identifiers.
    """
    search = patient_search(
        reader.cipher, identifier=identifier, authority=authority, name=name, birthdate=birthdate, limit=limit
    )
    return [_summary(reader, patient_id) for patient_id in reader.patient_ids(search)]


def _summary(reader: RecordReader, patient_id: int) -> dict:
    [row] = _plain_rows(reader, "record_patients", "id", [patient_id], columns=("id", "birth_date", "sex"))
    names = _plain_rows(
        reader,
        "record_names",
        "patient_id",
        [patient_id],
        order=("position",),
        drop=("id", "patient_id", "position", "family_key", "given_key", "message_id"),
    )
    identifiers = _plain_rows(
        reader,
        "record_identifiers",
        "patient_id",
        [patient_id],
        drop=("id", "patient_id", "link_reason", "linked_at", "message_id", "source_system"),
    )
    return {**row, "names": names, "identifiers": identifiers}


def _newer_in_priors(reader: RecordReader, patient: dict) -> dict[str, dict]:
    """The demographics that patients merged into ``patient`` had from a newer message: {name: that row}.

    Each column and list (``DEMOGRAPHICS``) is the one the newest message sent, by ``sent_at`` (a
    row without it: its ``as_of`` for all); the survivor's own on a tie.
    """
    rows, frontier = [patient], [patient["id"]]
    while frontier and len(rows) <= MAX_RESULTS:  # a cycle can only come from a bug: stop
        found = _plain_rows(reader, "record_patients", "merged_into_id", frontier, drop=("list_digests",))
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
    for name in DEMOGRAPHICS:
        best, best_at = patient, sent(patient, name)
        for row in rows[1:]:
            at = sent(row, name)
            if at is not None and (best_at is None or at > best_at):
                best, best_at = row, at
        if best is not patient:
            newer[name] = best
    return newer


def get_patient(reader: RecordReader, patient_id: int) -> dict | None:
    """Everything the record holds about one patient: its own rows, not those of patients merged into it,
    but for its demographics, each the newest among its own and theirs (``_newer_in_priors``).

    None for an unknown patient.
    """
    found = _plain_rows(reader, "record_patients", "id", [patient_id], drop=("list_digests",))
    if not found:
        return None
    patient = found[0]
    newer = _newer_in_priors(reader, patient)
    patient.update({name: row[name] for name, row in newer.items() if name in patient})
    del patient["sent_at"]
    patient["merged_into"] = patient.pop("merged_into_id")

    def own(table: str) -> list[dict]:
        return _plain_rows(reader, table, "patient_id", [patient_id])

    patient["identifiers"] = own("record_identifiers")
    for table in LISTS:
        holder = newer[table]["id"] if table in newer else patient_id
        patient[table.removeprefix("record_")] = _plain_rows(
            reader,
            table,
            "patient_id",
            [holder],
            order=("position",),
            drop=("patient_id", "family_key", "given_key") if table == "record_names" else ("patient_id",),
        )
    for name in ("visits", "allergies", "diagnoses", "procedures", "coverages"):
        patient[name] = own(f"record_{name}")
    appointments = own("record_appointments")
    for appointment in appointments:
        appointment["resources"] = _plain_rows(
            reader, "record_resources", "appointment_id", [appointment["id"]], drop=("appointment_id",)
        )
    patient["appointments"] = appointments
    orders = own("record_orders")
    for order in orders:
        order["observations"] = _plain_rows(
            reader, "record_observations", "order_id", [order["id"]], drop=("patient_id", "order_id")
        )
    patient["orders"] = orders
    patient["transactions"] = own("record_transactions")
    patient["merges"] = _plain_rows(
        reader, "record_merges", ("survivor_id", "prior_id"), [patient_id], drop=()
    )
    patient["conflicts"] = _plain_rows(
        reader, "record_conflicts", ("patient_id", "other_patient_id"), [patient_id], drop=()
    )
    return patient
