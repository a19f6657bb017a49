"""Who a message is about: identifiers keyed by (assigning authority, value), and the deterministic rule.

1. The identifiers of the PID (PID-3 repetitions, PID-2 and PID-4) that the record knows decide:
   every one of them belongs to one patient, and the unknown ones are linked to it.
2. When they belong to several patients, the message joins identifiers the record keeps apart:
   the first one known decides, and every other patient is flagged as a conflict.
3. When none is known, the identity rule may find the one patient whose normalised family name,
   given name, birth date and sex (by default) equal the message's. Several such patients, or
   one that already has a different identifier of the same authority (a second registration by
   the same system), are flagged, and a new patient is created instead. A strict rule (the
   default) also wants a corroborating field (``corroboration``): without one, the match is a
   ``possible_duplicate`` for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.record import schema
from engine.record.extract import MessageFacts, Remembered, SegmentReader
from engine.record.person import normalise
from engine.record.writer import Writer
from engine.store.cipher import cipher_of
from engine.store.driver import Select, fit_text

__all__ = [
    "DEFAULT_RULE",
    "Conflict",
    "IdentityRule",
    "Identifier",
    "Match",
    "corroboration",
    "digits",
    "find_by_rule",
    "find_known",
    "national_ids",
    "national_ids_of",
    "pid_identifiers",
    "possible_duplicate",
    "prior_identifiers",
]

RULE_FIELDS = ("family", "given", "birth_date", "sex")


@dataclass(frozen=True)
class IdentityRule:
    """Link a message with no known identifier to the one patient whose normalised ``fields`` are its own."""

    fields: tuple[str, ...] = RULE_FIELDS
    # strict: a match links only with a corroborating field (phone, address line and postal code);
    # without one it is a possible duplicate. Not strict: the fields alone link.
    strict: bool = True

    def __post_init__(self) -> None:
        unknown = [name for name in self.fields if name not in RULE_FIELDS]
        if unknown or not self.fields:
            raise ValueError(
                f"an identity rule compares a non-empty subset of {', '.join(RULE_FIELDS)};"
                f" got {self.fields!r}"
            )

    @property
    def name(self) -> str:
        """How links made by the rule are labelled: ``family+given+birth_date+sex``."""
        return "+".join(self.fields)


DEFAULT_RULE = IdentityRule()


@dataclass(frozen=True)
class Identifier:
    """One patient identifier (CX) as the record keys it."""

    authority: str
    value: str
    type_code: str = ""


@dataclass(frozen=True)
class Conflict:
    """An identity problem to flag once the patient the message applies to is known."""

    kind: str
    other_patient_id: int | None
    detail: str
    identifier: Identifier | None = None


@dataclass
class Match:
    """The outcome of identity resolution: the patient (None: create one), why, and what to flag."""

    patient_id: int | None
    reason: str
    known: set[tuple[str, str]] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)
    patient: dict[str, Any] | None = None  # the patient's row when the identifiers found it
    others: dict[int, dict[str, Any]] = field(default_factory=dict)  # rows of the conflicts' other patients
    links: list[tuple[int, str, str]] = field(default_factory=list)  # (other patient, kind, reason) to link


def _cx(reader: SegmentReader, n: int, repetition: int, facts: MessageFacts) -> Identifier | None:
    part = reader.part_at
    value = part(n, repetition, 1)
    if value is None or value == '""':
        return None
    authority = part(n, repetition, 4, 1) or part(n, repetition, 4, 2) or facts.default_authority
    return Identifier(fit_text(authority, 227), fit_text(value, 199), (part(n, repetition, 5) or "")[:20])


def _identifiers(reader: SegmentReader, fields: tuple[int, ...], facts: MessageFacts) -> list[Identifier]:
    found: dict[tuple[str, str], Identifier] = {}
    for n in fields:
        for repetition in range(1, reader.repetitions(n) + 1):
            identifier = _cx(reader, n, repetition, facts)
            if identifier is not None:
                found.setdefault((identifier.authority, identifier.value), identifier)
    return list(found.values())


# The identifiers ``pid_identifiers`` read, by the PID's text (with the delimiters) and the sender.
PID_IDENTIFIERS = Remembered(2_000)


def pid_identifiers(pid: SegmentReader, facts: MessageFacts) -> list[Identifier]:
    """PID-3 repetitions, then PID-2 and PID-4.

    An identifier without an assigning authority belongs to the sender (MSH-3@MSH-4).
    """
    key = (pid.source, facts.default_authority)
    return list(PID_IDENTIFIERS.get(key, lambda: _identifiers(pid, (3, 2, 4), facts)))


def prior_identifiers(mrg: SegmentReader, facts: MessageFacts) -> list[Identifier]:
    """MRG-1 repetitions, then MRG-4 (the prior patient ID of older versions)."""
    return _identifiers(mrg, (1, 4), facts)


def survivor_of(writer: Writer, patient_id: int) -> dict[str, Any]:
    """The row of the patient that ``patient_id`` was (maybe transitively) merged into, or its own."""
    return _survivor(writer, writer.select_one(schema.patients, {"id": patient_id}))


def _survivor(writer: Writer, row: dict[str, Any]) -> dict[str, Any]:
    """The row of the patient that the patient of ``row`` was (maybe transitively) merged into, or ``row``."""
    seen = {row["id"]}
    while (
        into := row["merged_into_id"]
    ) is not None and into not in seen:  # a cycle can only come from a bug; stop rather than loop
        seen.add(into)
        row = writer.select_one(schema.patients, {"id": into})
    return row


def find_known(writer: Writer, identifiers: list[Identifier]) -> Match | None:
    """Which patient the identifiers the record knows designate (None: it knows none); never writes."""
    if not identifiers:
        return None
    survivors: dict[int, dict[str, Any]] = {}  # linked patient id -> its survivor's row
    owner = {}
    for authority, value, linked in writer.identified(
        [(identifier.authority, identifier.value) for identifier in identifiers]
    ):
        if linked["id"] not in survivors:
            survivors[linked["id"]] = _survivor(writer, linked)
        owner[(authority, value)] = survivors[linked["id"]]["id"]
    if owner:
        ordered = [
            (identifier, owner[(identifier.authority, identifier.value)])
            for identifier in identifiers
            if (identifier.authority, identifier.value) in owner
        ]
        first, patient_id = ordered[0]
        patient = next(row for row in survivors.values() if row["id"] == patient_id)
        match = Match(
            patient_id,
            f"came with {first.authority} identifier already linked to patient {patient_id}",
            set(owner),
            patient=patient,
        )
        match.others = {row["id"]: row for row in survivors.values() if row["id"] != patient_id}
        for identifier, other in ordered[1:]:
            if other != patient_id and all(c.other_patient_id != other for c in match.conflicts):
                match.conflicts.append(
                    Conflict(
                        "identifiers_disagree",
                        other,
                        f"the PID joins identifiers of patients {patient_id} and {other};"
                        f" applied to {patient_id}, not linked",
                        identifier,
                    )
                )
        return match
    return None


_RULE_QUERIES: dict[tuple[str, ...], Select] = {}


def _rule_query(fields: tuple[str, ...]) -> Select:
    """The first 10 active patients equal on ``fields``, on the driver (``Select``), built once per rule.

    A name key is bound twice (``b_family`` and ``b_family_blind``): as sent, and hashed as an
    encrypted store holds it. With the birth date compared, the patients of that birth date are
    read first (its index) and their names checked (EXISTS): a birth date is far more selective
    than a family name, and SQLite, without statistics, otherwise starts from every name of that
    family.
    """
    query = _RULE_QUERIES.get(fields)
    if query is not None:
        return query
    p, n = schema.patients, schema.names

    def bound(column: sa.Column, key: str) -> sa.BindParameter:
        return sa.bindparam(f"b_{key}", type_=column.type)

    named = [
        (key := n.c[f"{name}_key"]).in_([bound(key, name), bound(key, f"{name}_blind")])
        for name in ("family", "given")
        if name in fields
    ]
    born = [p.c[name] == bound(p.c[name], name) for name in ("birth_date", "sex") if name in fields]
    active = p.c.merged_into_id.is_(None)
    if "birth_date" in fields or not named:
        statement = sa.select(p.c.id).where(active, *born)
        if named:
            statement = statement.where(sa.exists().where(n.c.patient_id == p.c.id, *named))
    else:
        statement = (
            sa.select(p.c.id).distinct().join(n, n.c.patient_id == p.c.id).where(active, *named, *born)
        )
    query = _RULE_QUERIES[fields] = Select(statement.order_by(p.c.id).limit(10))
    return query


def possible_duplicate(candidate: int, why: str, rule: IdentityRule) -> Match:
    """A new patient, ``candidate`` (the rule's one match) flagged as a possible duplicate for ``why``."""
    detail = f"identity rule {rule.name} matches patient {candidate}, {why}; a new patient was created"
    return Match(None, "new patient", conflicts=[Conflict("possible_duplicate", candidate, detail)])


def find_by_rule(
    writer: Writer,
    identifiers: list[Identifier],
    demographics: dict[str, str],
    rule: IdentityRule | None,
) -> Match:
    """The patient a PID with no known identifier belongs to under ``rule``; never writes.

    None: a new one, maybe with conflicts to flag.
    """
    if rule is None or not all(demographics.get(name) for name in rule.fields):
        return Match(None, "new patient")
    values = {name: demographics[name] for name in rule.fields}
    names = {f"{name}_key": values[name] for name in ("family", "given") if name in values}
    # The rule reads patients (never pending) and, to compare names, the names that could match.
    connection = writer.reading(schema.names, names) if names else writer.reading(schema.patients, {})
    # The name keys as stored: hashed with encryption, or still clear where rekey has not been yet.
    blind = cipher_of(connection).blind
    for name in ("family", "given"):
        if name in values:
            values[f"{name}_blind"] = blind(values[name])
    candidates = [row[0] for row in _rule_query(rule.fields).rows(connection, values)]
    if not candidates:
        return Match(None, "new patient")
    if len(candidates) > 1:
        return Match(
            None,
            "new patient",
            conflicts=[
                Conflict(
                    "rule_ambiguous",
                    other,
                    f"identity rule {rule.name} matches several patients; a new patient was created",
                )
                for other in candidates
            ],
        )
    candidate = candidates[0]
    i = schema.identifiers
    authorities = {identifier.authority for identifier in identifiers}
    if authorities:
        taken = (
            writer.reading(i, {"patient_id": candidate})
            .execute(
                sa.select(i.c.authority)
                .where(i.c.patient_id == candidate, i.c.alias.is_(False), i.c.authority.in_(authorities))
                .limit(1)
            )
            .scalar()
        )
        if taken is not None:
            return possible_duplicate(candidate, f"who already has another {taken} identifier", rule)
    return Match(candidate, f"identity rule {rule.name} matched patient {candidate}")


def digits(text: Any) -> str:
    """The digits of a value (a phone number, an SSN), in order: how the record compares them."""
    return "".join(char for char in str(text or "") if char.isdigit())


#: The identifier type (table 0203) of a social security number in PID-3 (PID-19's place from v2.7).
SSN_TYPE = "SS"


def national_ids(ssn: Any, identifiers: list[Identifier]) -> set[str]:
    """The digits of a PID's SSNs: PID-19 and the PID-3 identifiers of type SS."""
    found = {digits(ssn)} | {digits(i.value) for i in identifiers if i.type_code.upper() == SSN_TYPE}
    return found - {""}


def national_ids_of(writer: Writer, patient: dict[str, Any]) -> set[str]:
    """The digits of a stored patient's SSNs: its PID-19 and its identifiers of type SS."""
    typed = [
        Identifier(row["authority"], row["value"], row["type_code"])
        for row in writer.rows(schema.identifiers, {"patient_id": patient["id"], "type_code": SSN_TYPE})
    ]
    return national_ids(patient["ssn"], typed)


def corroboration(writer: Writer, patient_id: int, lists: dict[str, Any]) -> str | None:
    """Which field the PID's lists share with the patient: a phone, or an address line and postal code.

    None when neither does (or the PID sends neither). The SSN is compared before (``national_ids``).
    """
    telecoms = lists.get(schema.telecoms.name)
    if isinstance(telecoms, list):
        sent = {digits(row.get("value")) for row in telecoms} - {""}
        if sent and any(
            digits(row["value"]) in sent for row in writer.rows(schema.telecoms, {"patient_id": patient_id})
        ):
            return "phone"
    addresses = lists.get(schema.addresses.name)
    if isinstance(addresses, list):
        sent = {
            (normalise(row.get("line1")), normalise(row.get("postal_code")))
            for row in addresses
            if normalise(row.get("line1")) and normalise(row.get("postal_code"))
        }
        if sent and any(
            (normalise(row["line1"]), normalise(row["postal_code"])) in sent
            for row in writer.rows(schema.addresses, {"patient_id": patient_id})
        ):
            return "address"
    return None
