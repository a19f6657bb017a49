"""The unified patient record's tables, on the store's ``metadata`` (same database as the messages).

Conventions (see docs/record.md):

- ``message_id`` on a fact is the message whose data the row holds now; the previous values and
  the messages they came from are in ``record_history``. It is set to NULL if that message is
  ever purged from the store, so the record outlives message retention.
- ``as_of`` is the time of that message (EVN-2, else MSH-7, else when it was received): a
  message older than a row's ``as_of`` never overwrites the row (out-of-order arrival).
- Text columns are nullable: NULL means unknown or cleared by an HL7 null (``""``).
- Partial HL7 dates (birth dates, coverage dates) are ISO text of 4, 7 or 10 characters
  (``1980``, ``1980-05``, ``1980-05-17``), as FHIR writes them; instants are UTCDateTime.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.record.person import DEMOGRAPHICS
from engine.store.cipher import BLIND, FIT, SEALED
from engine.store.schema import RowId, UTCDateTime, metadata

__all__ = [
    "DEMOGRAPHICS",
    "FACT_TABLES",
    "TABLES",
    "addresses",
    "applied_messages",
    "appointment_resources",
    "appointments",
    "allergies",
    "conflicts",
    "contacts",
    "coverages",
    "diagnoses",
    "history",
    "identifiers",
    "merges",
    "names",
    "observations",
    "orders",
    "patients",
    "procedures",
    "telecoms",
    "transactions",
    "visits",
]


def _source() -> sa.Column:
    """The message the row's current values came from."""
    return sa.Column("message_id", RowId, sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True)


def _patient() -> sa.Column:
    return sa.Column("patient_id", RowId, sa.ForeignKey("record_patients.id"), nullable=False)


def _visit() -> sa.Column:
    return sa.Column("visit_id", RowId, sa.ForeignKey("record_visits.id"), nullable=True)


def _text(name: str, length: int = 200) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=True)


def _person(name: str, length: int = 200) -> sa.Column:
    """Person data: sealed when encryption is configured, so Text; its clear value is fitted to ``length``."""
    return sa.Column(name, sa.Text(), nullable=True, info={SEALED: True, FIT: length})


def _coded(prefix: str = "") -> list[sa.Column]:
    """A coded element (CE/CWE): code, display text and coding system."""
    return [_text(f"{prefix}code", 100), _text(f"{prefix}text", 500), _text(f"{prefix}system", 100)]


# The enterprise patient; demographics denormalised (one value each). A merged-away patient keeps
# its row (and its own demographics) with merged_into_id pointing at the survivor.
patients = sa.Table(
    "record_patients",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Column("merged_into_id", RowId, sa.ForeignKey("record_patients.id"), nullable=True),
    _text("birth_date", 10),
    _text("sex", 20),
    _text("language", 100),
    _text("marital_status", 100),
    sa.Column("deceased", sa.Boolean(), nullable=True),
    sa.Column("deceased_at", UTCDateTime(), nullable=True),
    # PID-19, the social security number as sent: person data, sealed with encryption, never logged.
    _person("ssn", 20),
    # {list table: list_digest of its rows as stored} for the lists (names, addresses, telecoms,
    # contacts) the record knows it holds as last written: a message sending one of them the same
    # way leaves it without reading it. Bookkeeping only: no history, never shown.
    sa.Column("list_digests", sa.JSON(), nullable=True),
    # {column or list table: time (UTC ISO) of the newest message that sent it}: a message older than
    # the row still writes what no newer message sent (last writer by message time, per field), and
    # a person's view across a link takes each from the row that had it last. NULL: rows written
    # before revision 0023, whose as_of stands for every field.
    sa.Column("sent_at", sa.JSON(), nullable=True),
    sa.Index(None, "birth_date"),
    sa.Index(None, "merged_into_id"),
    sa.Index(None, "message_id"),
)

# (authority, value) names one person. alias: the identifier came to this patient by a merge.
identifiers = sa.Table(
    "record_identifiers",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    sa.Column("authority", sa.String(227), nullable=False),
    sa.Column("value", sa.String(199), nullable=False),
    sa.Column("type_code", sa.String(20), nullable=False),
    sa.Column("source_system", sa.String(227), nullable=False),  # MSH-3 of the message that brought it
    sa.Column("alias", sa.Boolean(), nullable=False),
    sa.Column("link_reason", sa.Text(), nullable=False),
    sa.Column("linked_at", UTCDateTime(), nullable=False),
    _source(),
    sa.UniqueConstraint("authority", "value"),
    sa.Index(None, "patient_id"),
    sa.Index(None, "value"),
    sa.Index(None, "message_id"),
)

# PID-5 repetitions; family_key/given_key are the identity rule's normalised forms (and name search).
names = sa.Table(
    "record_names",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    sa.Column("position", sa.Integer(), nullable=False),
    _person("family"),
    _person("given"),
    _person("middle"),
    _person("prefix", 50),
    _person("suffix", 50),
    _text("name_type", 10),
    # Search keys: a keyed hash of the normalised name when encryption is configured (Cipher.blind).
    sa.Column("family_key", sa.String(200), nullable=True, info={BLIND: True}),
    sa.Column("given_key", sa.String(200), nullable=True, info={BLIND: True}),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "family_key"),
    sa.Index(None, "message_id"),
)

# PID-11 repetitions.
addresses = sa.Table(
    "record_addresses",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    sa.Column("position", sa.Integer(), nullable=False),
    _person("line1"),
    _person("line2"),
    _person("city", 100),
    _text("state", 100),
    _person("postal_code", 20),
    _text("country", 100),
    _text("address_type", 10),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# PID-13 (use "home") and PID-14 (use "work") repetitions: phone numbers and e-mail addresses.
telecoms = sa.Table(
    "record_telecoms",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("use", sa.String(10), nullable=False),
    _person("value"),
    _text("use_code", 10),
    _text("equipment", 10),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# NK1: next of kin and other contacts.
contacts = sa.Table(
    "record_contacts",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    sa.Column("position", sa.Integer(), nullable=False),
    _person("family"),
    _person("given"),
    *_coded("relationship_"),
    _person("phone", 100),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# PV1/PV2. status: planned, in-progress, finished, cancelled, unknown (known only from ORU/SIU/DFT).
visits = sa.Table(
    "record_visits",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _text("visit_number", 199),
    _text("account_number", 199),  # PID-18.1 of the messages about the visit; A41 merges two
    # A42: the visit this one was merged into (its facts moved there); later messages naming it go there.
    sa.Column("merged_into_id", RowId, sa.ForeignKey("record_visits.id"), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    _text("patient_class", 10),
    _text("point_of_care", 100),
    _text("room", 100),
    _text("bed", 100),
    _text("facility", 100),
    _text("prior_location"),
    _text("attending_id", 100),
    _text("attending_name"),
    _text("referring_id", 100),
    _text("referring_name"),
    _text("hospital_service", 20),
    _text("admit_reason", 500),
    _text("discharge_disposition", 20),
    sa.Column("admitted_at", UTCDateTime(), nullable=True),
    sa.Column("discharged_at", UTCDateTime(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "visit_number"),
    sa.Index(None, "account_number"),
    sa.Index(None, "message_id"),
)

# AL1.
allergies = sa.Table(
    "record_allergies",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    *_coded(),
    _text("allergy_type", 20),
    _text("severity", 20),
    _text("reaction", 500),
    _text("identified_date", 10),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# DG1.
diagnoses = sa.Table(
    "record_diagnoses",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _visit(),
    *_coded(),
    _text("diagnosis_type", 20),
    sa.Column("diagnosed_at", UTCDateTime(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "visit_id"),
    sa.Index(None, "message_id"),
)

# PR1.
procedures = sa.Table(
    "record_procedures",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _visit(),
    *_coded(),
    sa.Column("performed_at", UTCDateTime(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "visit_id"),
    sa.Index(None, "message_id"),
)

# IN1 (+ the IN2 that follows it).
coverages = sa.Table(
    "record_coverages",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _text("plan_id", 100),
    _text("plan_name"),
    _text("company_id", 100),
    _text("company_name"),
    _text("group_number", 100),
    _text("group_name"),
    _text("policy_number", 100),
    _text("member_number", 100),
    _text("insured_name"),
    _text("relationship", 20),
    _text("effective_date", 10),
    _text("expiration_date", 10),
    _text("medicare_number", 100),
    _text("medicaid_number", 100),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# SCH. status: the filler status (table 0278: Booked, Cancelled, Deleted, Noshow, ...). Found by SCH-2
# (filler id and namespace), else SCH-1 (placer id and namespace) across the record: the namespace is
# the EI's component 2, else the sending application (MSH-3).
appointments = sa.Table(
    "record_appointments",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _visit(),
    _text("placer_id", 100),
    _text("placer_namespace", 100),
    _text("filler_id", 100),
    _text("filler_namespace", 100),
    sa.Column("status", sa.String(20), nullable=False),
    _text("event", 10),  # the SIU trigger that last changed it
    sa.Column("start_at", UTCDateTime(), nullable=True),
    sa.Column("end_at", UTCDateTime(), nullable=True),
    sa.Column("duration_minutes", sa.Integer(), nullable=True),
    *_coded("reason_"),
    *_coded("type_"),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "placer_id", "placer_namespace"),
    sa.Index(None, "filler_id", "filler_namespace"),
    sa.Index(None, "message_id"),
)

# AIS (service), AIG (resource), AIL (location), AIP (personnel): replaced by each SIU that lists them.
appointment_resources = sa.Table(
    "record_resources",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column(
        "appointment_id", RowId, sa.ForeignKey("record_appointments.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kind", sa.String(10), nullable=False),  # service, resource, location, personnel
    *_coded(),
    _text("role", 200),
    sa.Column("start_at", UTCDateTime(), nullable=True),
    sa.Column("duration_minutes", sa.Integer(), nullable=True),
    _source(),
    sa.Index(None, "appointment_id"),
    sa.Index(None, "message_id"),
)

# ORC/OBR (+ NTE after OBR in notes). Found by filler number and namespace (OBR-3/ORC-3), else placer
# number and namespace (OBR-2/ORC-2), across the record; the namespace as for appointments.
orders = sa.Table(
    "record_orders",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _visit(),
    _text("placer_number", 100),
    _text("placer_namespace", 100),
    _text("filler_number", 100),
    _text("filler_namespace", 100),
    *_coded(),
    _text("order_control", 10),
    _text("status", 10),  # OBR-25, table 0123
    sa.Column("observed_at", UTCDateTime(), nullable=True),
    sa.Column("reported_at", UTCDateTime(), nullable=True),
    _text("ordering_provider_id", 100),
    _text("ordering_provider_name"),
    sa.Column("notes", sa.Text(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "filler_number", "filler_namespace"),
    sa.Index(None, "placer_number", "placer_namespace"),
    sa.Index(None, "message_id"),
)

# OBX (+ NTE after OBX in notes). Keyed by order, code, sub-ID and occurrence (the n-th OBX with that
# code and sub-ID under the order, for text reports that repeat one code line by line).
observations = sa.Table(
    "record_observations",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("order_id", RowId, sa.ForeignKey("record_orders.id"), nullable=False),
    _patient(),
    *_coded(),
    sa.Column("sub_id", sa.String(20), nullable=False),
    sa.Column("occurrence", sa.Integer(), nullable=False),
    _text("value_type", 10),
    sa.Column("value", sa.Text(), nullable=True),  # the value as text (ED: the data component)
    sa.Column("numeric_value", sa.Float(), nullable=True),  # NM, and SN's first number
    _text("comparator", 2),  # SN
    _text("separator", 2),  # SN: - + / : between two numbers
    sa.Column("numeric_high", sa.Float(), nullable=True),  # SN's second number
    *_coded("coded_"),  # CE/CWE values
    _text("media_type", 100),  # ED type/subtype
    _text("encoding", 20),  # ED encoding (A, Hex, Base64)
    _text("units", 100),
    _text("reference_range", 100),
    _text("abnormal_flags", 50),
    sa.Column("status", sa.String(2), nullable=False),  # OBX-11, table 0085
    sa.Column("observed_at", UTCDateTime(), nullable=True),
    _text("performing_lab"),
    sa.Column("notes", sa.Text(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "order_id"),
    sa.Index(None, "patient_id"),
    sa.Index(None, "message_id"),
)

# FT1, linked to the visit of the message's PV1. type: table 0017 (CG, CD, PY, AJ, CO).
transactions = sa.Table(
    "record_transactions",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    _patient(),
    _visit(),
    _text("transaction_id", 100),
    _text("batch_id", 100),
    sa.Column("transaction_type", sa.String(10), nullable=False),
    sa.Column("transaction_at", UTCDateTime(), nullable=True),
    sa.Column("posted_at", UTCDateTime(), nullable=True),
    *_coded(),
    sa.Column("quantity", sa.Numeric(18, 4), nullable=True),
    sa.Column("amount", sa.Numeric(18, 4), nullable=True),  # FT1-11 extended amount
    sa.Column("unit_amount", sa.Numeric(18, 4), nullable=True),
    _text("currency", 10),
    _text("department", 100),
    *_coded("procedure_"),
    sa.Column("diagnoses", sa.JSON(), nullable=True),  # FT1-19: [{code, text, system}]
    _text("performed_by"),
    _text("ordered_by"),
    sa.Column("as_of", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "visit_id"),
    sa.Index(None, "message_id"),
)

# One row per merge of a prior patient into a survivor; moved lists every row that changed patient,
# so that unmerge can move exactly those back. kind says who decided it: "merge" (an ADT merge
# event), "link" (A24 or an operator's link), "cross_reference" (a PID listing identifiers of two
# patients), "rule" (the identity rule), "operator" (an operator's merge); reason says why.
merges = sa.Table(
    "record_merges",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("survivor_id", RowId, sa.ForeignKey("record_patients.id"), nullable=False),
    sa.Column(
        "prior_id", RowId, sa.ForeignKey("record_patients.id"), nullable=True
    ),  # NULL: the prior ids were unknown
    sa.Column("prior_identifiers", sa.JSON(), nullable=False),  # [[authority, value], ...] from MRG-1
    sa.Column("event", sa.String(10), nullable=False),
    sa.Column("merged_at", UTCDateTime(), nullable=False),
    sa.Column("moved", sa.JSON(), nullable=False),  # {table name: [row ids]}
    sa.Column("unmerged_at", UTCDateTime(), nullable=True),
    sa.Column("unmerge_reason", sa.Text(), nullable=True),
    sa.Column("kind", sa.String(20), nullable=False, server_default="merge"),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("source_system", sa.String(227), nullable=True),  # MSH-3 of the message, or the operator
    _source(),
    sa.Index(None, "survivor_id"),
    sa.Index(None, "prior_id"),
    sa.Index(None, "message_id"),
)

# Identity problems for an operator: never resolved by merging silently.
conflicts = sa.Table(
    "record_conflicts",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("patient_id", RowId, sa.ForeignKey("record_patients.id"), nullable=True),
    sa.Column("other_patient_id", RowId, sa.ForeignKey("record_patients.id"), nullable=True),
    _text("authority", 227),
    _text("value", 199),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolution", sa.Text(), nullable=True),
    _source(),
    sa.Index(None, "patient_id"),
    sa.Index(None, "other_patient_id"),
    sa.Index(None, "resolved_at"),  # the worklist: open conflicts
    sa.Index(None, "message_id"),
)

# Every change of a stored value: entity is the table name, field the column (or names, addresses,
# telecoms, contacts for a patient's lists, as JSON). cause says what changed it (ADT^A08, merge 3).
history = sa.Table(
    "record_history",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(40), nullable=False),
    sa.Column("entity_id", sa.BigInteger(), nullable=False),
    sa.Column("field", sa.String(60), nullable=False),
    # Sealed as person data: a change of a name or an address keeps both values here.
    sa.Column("old_value", sa.Text(), nullable=True, info={SEALED: True}),
    sa.Column("new_value", sa.Text(), nullable=True, info={SEALED: True}),
    sa.Column("cause", sa.String(60), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    _source(),
    sa.Index(None, "entity", "entity_id"),
    sa.Index(None, "message_id"),
)

# One row per message applied to the record: applying the same message again changes nothing.
applied_messages = sa.Table(
    "record_applied_messages",
    metadata,
    sa.Column(
        "message_id",
        RowId,
        sa.ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("message_time", UTCDateTime(), nullable=False),
    sa.Column("patient_id", RowId, sa.ForeignKey("record_patients.id"), nullable=True),
    sa.Column("applied", sa.Boolean(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
)

#: Tables whose rows belong to a patient through patient_id and move with a merge.
FACT_TABLES = (
    identifiers,
    visits,
    allergies,
    diagnoses,
    procedures,
    coverages,
    appointments,
    orders,
    observations,
    transactions,
)

#: Every table of the record by name.
TABLES = {table.name: table for table in metadata.sorted_tables if table.name.startswith("record_")}
