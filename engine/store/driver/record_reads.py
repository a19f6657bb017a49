"""Reads of the patient record on a SQLite store with the stdlib's sqlite3, for ``patient find`` and ``show``.

``RecordRows`` answers what ``engine.record.query``'s reader answers through SQLAlchemy: the ids of
a ``PatientSearch`` and a table's rows by ids, each value as SQLAlchemy's type gives it (an aware
UTC datetime, a bool, parsed JSON, a Decimal of scale 4) and person data opened with the store's
cipher; ``engine.record.view`` makes a person of them for either. The columns and their kinds are
said here a second time (``COLUMNS``, beside ``engine.record.schema``, which this layer cannot import):
tests/store/driver/test_record_reads.py fails when a record table's columns and these differ, and
compares both readers on a store holding real record data, clear and sealed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from decimal import Decimal

from engine.store.cipher import Cipher
from engine.store.driver.sqlite_values import read_time
from engine.store.reads import PatientSearch

__all__ = ["COLUMNS", "DECIMAL_SCALE", "KINDS", "RecordRows"]

#: The kinds of column values read other than as stored: UTC times, booleans (0/1), JSON text, decimals
#: (SQLite keeps them as numbers) and sealed person data (text the cipher opens).
KINDS = ("time", "flag", "json", "decimal", "sealed")
#: The scale of the record's decimals (``Numeric(18, 4)``), as SQLAlchemy reads them back.
DECIMAL_SCALE = 4

_SPEC = {
    "record_patients": (
        "id created_at:time updated_at:time as_of:time message_id merged_into_id birth_date sex language"
        " marital_status deceased:flag deceased_at:time ssn:sealed list_digests:json sent_at:json"
    ),
    "record_identifiers": (
        "id patient_id authority value type_code source_system alias:flag link_reason linked_at:time"
        " message_id"
    ),
    "record_names": (
        "id patient_id position family:sealed given:sealed middle:sealed prefix:sealed suffix:sealed"
        " name_type family_key given_key message_id"
    ),
    "record_addresses": (
        "id patient_id position line1:sealed line2:sealed city:sealed state postal_code:sealed country"
        " address_type message_id"
    ),
    "record_telecoms": ("id patient_id position use value:sealed use_code equipment message_id"),
    "record_contacts": (
        "id patient_id position family:sealed given:sealed relationship_code relationship_text"
        " relationship_system phone:sealed message_id"
    ),
    "record_visits": (
        "id patient_id visit_number account_number merged_into_id status patient_class point_of_care room"
        " bed facility prior_location attending_id attending_name referring_id referring_name"
        " hospital_service admit_reason discharge_disposition admitted_at:time discharged_at:time"
        " as_of:time message_id"
    ),
    "record_allergies": (
        "id patient_id code text system allergy_type severity reaction identified_date as_of:time message_id"
    ),
    "record_diagnoses": (
        "id patient_id visit_id code text system diagnosis_type diagnosed_at:time as_of:time message_id"
    ),
    "record_procedures": ("id patient_id visit_id code text system performed_at:time as_of:time message_id"),
    "record_coverages": (
        "id patient_id plan_id plan_name company_id company_name group_number group_name policy_number"
        " member_number insured_name relationship effective_date expiration_date medicare_number"
        " medicaid_number as_of:time message_id"
    ),
    "record_appointments": (
        "id patient_id visit_id placer_id placer_namespace filler_id filler_namespace status event"
        " start_at:time end_at:time duration_minutes reason_code reason_text reason_system type_code"
        " type_text type_system as_of:time message_id"
    ),
    "record_resources": (
        "id appointment_id kind code text system role start_at:time duration_minutes message_id"
    ),
    "record_orders": (
        "id patient_id visit_id placer_number placer_namespace filler_number filler_namespace code text"
        " system order_control status observed_at:time reported_at:time ordering_provider_id"
        " ordering_provider_name notes as_of:time message_id"
    ),
    "record_observations": (
        "id order_id patient_id code text system sub_id occurrence value_type value numeric_value"
        " comparator separator numeric_high coded_code coded_text coded_system media_type encoding units"
        " reference_range abnormal_flags status observed_at:time performing_lab notes as_of:time"
        " message_id"
    ),
    "record_transactions": (
        "id patient_id visit_id transaction_id batch_id transaction_type transaction_at:time"
        " posted_at:time code text system quantity:decimal amount:decimal unit_amount:decimal currency"
        " department procedure_code procedure_text procedure_system diagnoses:json performed_by ordered_by"
        " as_of:time message_id"
    ),
    "record_merges": (
        "id survivor_id prior_id prior_identifiers:json event merged_at:time moved:json unmerged_at:time"
        " unmerge_reason kind reason source_system message_id"
    ),
    "record_conflicts": (
        "id kind patient_id other_patient_id authority value detail created_at:time resolved_at:time"
        " resolution message_id"
    ),
}

#: The record tables read here: {table: {column: its kind, or "" for a value read as stored}}, in table order.
COLUMNS: dict[str, dict[str, str]] = {
    table: dict((*column.split(":"), "")[:2] for column in spec.split()) for table, spec in _SPEC.items()
}


class RecordRows:
    """The record's reads inside one read transaction of a SQLite store (``SQLiteReads.record``)."""

    def __init__(self, connection: sqlite3.Connection, cipher: Cipher):
        self._connection = connection
        self.cipher = cipher
        self._read = {
            "time": read_time,
            "flag": bool,
            "json": json.loads,
            "decimal": lambda number: Decimal(f"{number:.{DECIMAL_SCALE}f}"),
            "sealed": cipher.open_text,
        }

    def patient_ids(self, search: PatientSearch) -> list[int]:
        """The ids of the patients ``search`` finds, lowest first, at most its limit."""
        where, parameters = ["merged_into_id IS NULL"], []
        if search.identifier is not None:
            owned = "SELECT patient_id FROM record_identifiers WHERE value = ?"
            parameters.append(search.identifier)
            if search.authority is not None:
                owned += " AND authority = ?"
                parameters.append(search.authority)
            where.append(f"id IN ({owned})")
        if search.name_pattern is not None:
            matches = ["family_key LIKE ? ESCAPE '\\'", "given_key LIKE ? ESCAPE '\\'"]
            parameters += [search.name_pattern] * 2
            if search.name_blind is not None:
                matches += ["family_key = ?", "given_key = ?"]
                parameters += [search.name_blind] * 2
            where.append(f"id IN (SELECT patient_id FROM record_names WHERE {' OR '.join(matches)})")
        if search.birth_date is not None:
            where.append("birth_date = ?")
            parameters.append(search.birth_date)
        sql = f"SELECT id FROM record_patients WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        return [row[0] for row in self._connection.execute(sql, (*parameters, search.limit))]

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

        Each row is {column: value} for ``columns`` (else all) but ``drop``, values as SQLAlchemy
        reads them, person data opened.
        """
        if not ids:
            return []
        kinds = COLUMNS[table]
        names = [name for name in (columns or kinds) if name not in drop]
        marks = ", ".join("?" * len(ids))
        sql = (
            f"SELECT {', '.join(_quoted(name) for name in names)} FROM {table}"
            f" WHERE {' OR '.join(f'{_quoted(name)} IN ({marks})' for name in by)}"
            f" ORDER BY {', '.join(_quoted(name) for name in order)}"
        )
        readers = [self._read.get(kinds[name]) for name in names]
        return [
            {
                name: value if read is None or value is None else read(value)
                for name, read, value in zip(names, readers, row, strict=True)
            }
            for row in self._connection.execute(sql, [*ids] * len(by))
        ]


def _quoted(name: str) -> str:
    """A column's name as an SQL identifier (some are keywords elsewhere: ``position``, ``value``)."""
    return f'"{name}"'
