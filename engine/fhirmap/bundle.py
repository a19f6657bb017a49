"""One v2 message as a FHIR R4 transaction (or collection) Bundle, after the HL7 v2-to-FHIR mapping guide.

The segments are read in order, each by its own mapper, and each resource refers to the ones it
belongs to (the last PID, PV1, OBR before it) by ``urn:uuid:`` full URLs. A resource's uuid is a
uuid5 of the sender, the control id, the segment's position and its type, so converting the same
message again gives the same Bundle. Every resource carries one identifier the server can find it
by: its business identifier with a system (PID-3, PV1-19, OBR-3 ...), else one naming the message
and segment (``urn:hl7engine:v2-segment``). Patient, Encounter, Account and Appointment are sent
as conditional updates (``PUT Patient?identifier=...``: a later event updates them), the others as
conditional creates (``ifNoneExist``): so a message sent twice creates nothing twice.
Mappings segment by segment: docs/fhir.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from urllib.parse import quote

from engine.fhirmap.common import (
    ALLERGY_CATEGORY,
    CRITICALITY,
    ENCOUNTER_CLASS,
    GENDER,
    RELATIONSHIP,
    compact,
    concept,
    ssn_identifier,
)
from engine.fhirmap.orders import ORDER_MAPPERS
from engine.fhirmap.reading import (
    Field,
    address,
    coded,
    fhir_datetime,
    human_name,
    identifier,
    person_reference,
    repetitions,
    telecoms,
)
from engine.hl7.charset import decode
from engine.hl7.message import Message, Segment

__all__ = ["BUNDLE_TYPES", "SEGMENT_SYSTEM", "MessageMapper", "bundle_json", "to_fhir_bundle"]

#: The Bundle types ``to_fhir_bundle`` writes.
BUNDLE_TYPES = ("transaction", "collection")
#: The system of the identifier naming a resource's message and segment, when it has no business one.
SEGMENT_SYSTEM = "urn:hl7engine:v2-segment"
#: Resource types a later message updates (conditional update); the others are created once.
_UPDATED = frozenset({"Patient", "Encounter", "Account", "Appointment"})
_PLANNED_EVENTS = frozenset({"A05", "A14"})
_CANCELLED_EVENTS = frozenset({"A11", "A27", "A38"})
_SEARCH_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", ",": "\\,", "$": "\\$"})


def to_fhir_bundle(message: Message, *, bundle_type: str = "transaction", zone: tzinfo | None = None) -> dict:
    """The Bundle of a decoded message; times without an offset are read in ``zone`` (default: local)."""
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle_type must be one of {', '.join(BUNDLE_TYPES)} (got {bundle_type!r})")
    mapper = MessageMapper(message, zone or datetime.now().astimezone().tzinfo)
    return mapper.bundle(bundle_type)


def bundle_json(payload: bytes, *, zone: tzinfo | None = None) -> bytes:
    """The transaction Bundle of an encoded message as UTF-8 JSON; HL7Error when it is no message.

    Bytes the message's charset cannot read become U+FFFD: JSON has no place for them.
    """
    bundle = to_fhir_bundle(Message.parse(decode(payload).text), zone=zone)
    text = json.dumps(bundle, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")


@dataclass
class _Entry:
    full_url: str
    resource: dict
    key: dict  # the identifier the conditional request searches by


@dataclass
class MessageMapper:
    """Walks a message's segments and collects the resources; ``bundle`` gives the result."""

    message: Message
    zone: tzinfo
    entries: list[_Entry] = field(default_factory=list)
    patient: str | None = None
    encounter: str | None = None
    account: str | None = None
    order: dict | None = None  # the last OBR: {"request": ..., "report": ..., "request_url": ...}
    orc: Segment | None = None
    noted: dict | None = None  # the resource an NTE adds its note to
    appointment: dict | None = None
    last: dict[str, dict] = field(default_factory=dict)  # the last resource of each type

    def __post_init__(self) -> None:
        get = self.message.get
        self.event = get("MSH-9.2")
        self.message_code = get("MSH-9.1")
        self._origin = "^".join((get("MSH-3.1"), get("MSH-4.1"), get("MSH-10")))

    # ----------------------------------------------------------------------------------------- plumbing

    def fields(self, segment: Segment, n: int) -> list[Field]:
        """The non-empty repetitions of field ``n`` of ``segment``."""
        return repetitions(segment, n, self.message.delimiters)

    def first(self, segment: Segment, n: int) -> Field:
        """The first repetition of field ``n`` (empty when absent)."""
        found = self.fields(segment, n)
        return found[0] if found else Field("", self.message.delimiters)

    def when(self, segment: Segment, n: int, component: int = 1) -> str | None:
        """Field ``n`` (its component) as a FHIR dateTime."""
        return fhir_datetime(self.first(segment, n)(component), self.zone)

    def date(self, segment: Segment, n: int) -> str | None:
        """Field ``n`` as a FHIR date (the time, if any, dropped)."""
        written = self.when(segment, n)
        return written[:10] if written else None

    def add(self, index: int, resource: dict) -> str:
        """Add a resource built from the segment at ``index``; returns its fullUrl."""
        kind = resource["resourceType"]
        full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'hl7engine:{self._origin}|{index}|{kind}')}"
        identifiers = resource["identifier"] = [item for item in resource.get("identifier", []) if item]
        key = next((item for item in identifiers if item.get("system") and item.get("value")), None)
        if key is None:
            key = {"system": SEGMENT_SYSTEM, "value": f"{self._origin}^{index + 1}"}
            identifiers.append(key)
        self.entries.append(_Entry(full_url, resource, key))
        self.last[kind] = resource
        return full_url

    def bundle(self, bundle_type: str) -> dict:
        """Map every segment, then the Bundle of what was found."""
        mappers = _MAPPERS
        for index, segment in enumerate(self.message.segments):
            mapper = mappers.get(segment.name)
            if mapper is not None:
                mapper(self, index, segment)
        if self.appointment is not None and not self.appointment["participant"]:
            self.appointment["participant"].append({"type": [{"text": "unknown"}], "status": "needs-action"})
        entries = []
        for entry in self.entries:
            item = {"fullUrl": entry.full_url, "resource": compact(entry.resource)}
            if bundle_type == "transaction":
                item["request"] = _request(entry.resource["resourceType"], entry.key)
            entries.append(item)
        return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}

    def ref(self, full_url: str | None) -> dict | None:
        """A Reference to a resource of this Bundle."""
        return {"reference": full_url} if full_url else None


def _request(kind: str, key: dict) -> dict:
    token = quote(key["system"], safe=":/.") + "|" + quote(key["value"].translate(_SEARCH_ESCAPES), safe="")
    if kind in _UPDATED:
        return {"method": "PUT", "url": f"{kind}?identifier={token}"}
    return {"method": "POST", "url": kind, "ifNoneExist": f"identifier={token}"}


# --------------------------------------------------------------------------------------------- ADT


def _pid(m: MessageMapper, index: int, pid: Segment) -> None:
    """PID -> Patient (PID-18 -> Account)."""
    identifiers = [identifier(cx, use="usual") for cx in m.fields(pid, 3)]
    identifiers += [identifier(cx, type_code="PT") for n in (2, 4) for cx in m.fields(pid, n)]
    ssn = m.first(pid, 19)(1)
    if ssn:
        identifiers.append(ssn_identifier(ssn))
    licence = m.first(pid, 20)
    if licence(1):
        identifiers.append({"type": concept("DL", None, "HL70203"), "value": licence(1)})
    multiple = m.first(pid, 24)(1)
    order = m.first(pid, 25)(1)
    died = m.when(pid, 29)
    mother = m.first(pid, 6)(1)
    patient = {
        "resourceType": "Patient",
        "identifier": [item for item in identifiers if item],
        "name": [human_name(xpn) for xpn in m.fields(pid, 5)],
        "birthDate": m.date(pid, 7),
        "gender": GENDER.get(m.first(pid, 8)(1)[:1]),
        "address": [address(xad) for xad in m.fields(pid, 11)],
        "telecom": telecoms(m.fields(pid, 13), "home") + telecoms(m.fields(pid, 14), "work"),
        "communication": [{"language": coded(m.first(pid, 15))}] if m.first(pid, 15) else [],
        "maritalStatus": coded(m.first(pid, 16), "HL70002"),
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": mother,
            }
        ]
        if mother
        else [],
    }
    if order.isdigit():
        patient["multipleBirthInteger"] = int(order)
    elif multiple in ("Y", "N"):
        patient["multipleBirthBoolean"] = multiple == "Y"
    if died:
        patient["deceasedDateTime"] = died
    elif m.first(pid, 30)(1) in ("Y", "N"):
        patient["deceasedBoolean"] = m.first(pid, 30)(1) == "Y"
    m.patient = m.add(index, patient)
    m.encounter = m.order = m.noted = m.orc = None
    number = m.first(pid, 18)
    m.account = None
    if number:
        account = {
            "resourceType": "Account",
            "status": "active",
            "identifier": [identifier(number, type_code="AN")],
            "subject": [m.ref(m.patient)],
        }
        m.account = m.add(index, account)
    if m.appointment is not None:
        m.appointment["participant"].insert(0, {"actor": m.ref(m.patient), "status": "accepted"})


def _pv1(m: MessageMapper, index: int, pv1: Segment) -> None:
    """PV1 -> Encounter."""
    class_code = ENCOUNTER_CLASS.get(m.first(pv1, 2)(1))
    encounter_class = (
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code}
        if class_code
        else {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
    )
    ended = m.when(pv1, 45)
    if m.event in _CANCELLED_EVENTS:
        status = "cancelled"
    elif m.event in _PLANNED_EVENTS or m.message_code == "SIU":
        status = "planned"
    elif m.event == "A03" or ended:
        status = "finished"
    else:
        status = "in-progress"
    participants = [
        {
            "type": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code}
                    ]
                }
            ],
            "individual": person_reference(xcn),
        }
        for n, code in ((7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM"))
        for xcn in m.fields(pv1, n)
    ]
    place = m.first(pv1, 3)
    location = " ".join(part for part in (place(1), place(2), place(3), place(4)) if part)
    encounter = {
        "resourceType": "Encounter",
        "status": status,
        "class": encounter_class,
        "identifier": [identifier(m.first(pv1, 19), type_code="VN")],
        "type": [coded(m.first(pv1, 4), "HL70007")],
        "serviceType": coded(m.first(pv1, 10), "HL70069"),
        "subject": m.ref(m.patient),
        "account": [m.ref(m.account)],
        "period": {"start": m.when(pv1, 44), "end": ended},
        "participant": participants,
        "location": [{"location": {"display": location}}] if location else [],
        "hospitalization": {
            "preAdmissionIdentifier": identifier(m.first(pv1, 5)),
            "admitSource": coded(m.first(pv1, 14), "HL70023"),
            "reAdmission": coded(m.first(pv1, 13), "HL70092"),
            "dischargeDisposition": coded(m.first(pv1, 36), "HL70112"),
        },
    }
    m.encounter = m.add(index, encounter)
    m.noted = None


def _pv2(m: MessageMapper, index: int, pv2: Segment) -> None:
    """PV2-3 (admit reason) -> the Encounter's reasonCode."""
    encounter = m.last.get("Encounter")
    reason = coded(m.first(pv2, 3))
    if m.encounter and encounter is not None and reason:
        encounter.setdefault("reasonCode", []).append(reason)


def _nk1(m: MessageMapper, index: int, nk1: Segment) -> None:
    """NK1 -> RelatedPerson."""
    if m.patient is None:
        return
    relationships = [coded(m.first(nk1, 3), "HL70063"), coded(m.first(nk1, 7), "HL70131")]
    person = {
        "resourceType": "RelatedPerson",
        "patient": m.ref(m.patient),
        "relationship": [item for item in relationships if item],
        "name": [human_name(xpn) for xpn in m.fields(nk1, 2)],
        "address": [address(xad) for xad in m.fields(nk1, 4)],
        "telecom": telecoms(m.fields(nk1, 5), "home") + telecoms(m.fields(nk1, 6), "work"),
        "gender": GENDER.get(m.first(nk1, 15)(1)[:1]),
        "birthDate": m.date(nk1, 16),
        "period": {"start": m.date(nk1, 8), "end": m.date(nk1, 9)},
    }
    m.add(index, person)


def _in1(m: MessageMapper, index: int, in1: Segment) -> None:
    """IN1 -> Coverage."""
    if m.patient is None:
        return
    company = m.first(in1, 4)(1) or m.first(in1, 3)(1)
    relation = m.first(in1, 17)(1)
    coverage_class = "http://terminology.hl7.org/CodeSystem/coverage-class"
    plan, group, group_name = m.first(in1, 2), m.first(in1, 8)(1), m.first(in1, 9)(1)
    classes = [
        {"type": {"coding": [{"system": coverage_class, "code": kind}]}, "value": value, "name": name}
        for kind, value, name in (("group", group, group_name), ("plan", plan(1), plan(2)))
        if value
    ]
    coverage = {
        "resourceType": "Coverage",
        "status": "active",
        "identifier": [identifier(m.first(in1, 36), type_code="MB")],
        "type": coded(m.first(in1, 15), "HL70086"),
        "subscriberId": m.first(in1, 49)(1),
        "subscriber": m.ref(m.patient) if relation == "SEL" else None,
        "beneficiary": m.ref(m.patient),
        "relationship": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                    "code": RELATIONSHIP.get(relation, "other"),
                }
            ]
        }
        if relation
        else None,
        "period": {"start": m.date(in1, 12), "end": m.date(in1, 13)},
        "payor": [
            compact(
                {
                    "display": company or "unknown payer",
                    "identifier": identifier(m.first(in1, 3)),
                }
            )
        ],
        "class": classes,
    }
    m.add(index, coverage)


def _al1(m: MessageMapper, index: int, al1: Segment) -> None:
    """AL1 -> AllergyIntolerance."""
    if m.patient is None:
        return
    category = ALLERGY_CATEGORY.get(m.first(al1, 2)(1))
    reactions = [{"manifestation": [{"text": item(1)}]} for item in m.fields(al1, 5) if item(1)]
    allergy = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "category": [category] if category else [],
        "criticality": CRITICALITY.get(m.first(al1, 4)(1)),
        "code": coded(m.first(al1, 3)),
        "patient": m.ref(m.patient),
        "encounter": m.ref(m.encounter),
        "onsetDateTime": m.when(al1, 6),
        "reaction": reactions,
    }
    m.add(index, allergy)


def _dg1(m: MessageMapper, index: int, dg1: Segment) -> None:
    """DG1 -> Condition (an encounter diagnosis)."""
    if m.patient is None:
        return
    description = m.first(dg1, 4)(1)
    code = coded(m.first(dg1, 3)) or concept(None, description or None)
    if code is not None and description:
        code["text"] = description  # DG1-4 is the code's text (the guide's mapping)
    condition = {
        "resourceType": "Condition",
        "identifier": [identifier(m.first(dg1, 20))],
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": code,
        "subject": m.ref(m.patient),
        "encounter": m.ref(m.encounter),
        "onsetDateTime": m.when(dg1, 5),
        "asserter": person_reference(m.first(dg1, 16)),
    }
    m.add(index, condition)


def _nte(m: MessageMapper, index: int, nte: Segment) -> None:
    """NTE -> a note on the resource of the segment before it (Observation, ServiceRequest)."""
    text = "\n".join(item(1) for item in m.fields(nte, 3) if item(1))
    if m.noted is not None and text:
        m.noted.setdefault("note", []).append({"text": text})


_MAPPERS: dict[str, Callable[[MessageMapper, int, Segment], None]] = {
    "PID": _pid,
    "PV1": _pv1,
    "PV2": _pv2,
    "NK1": _nk1,
    "IN1": _in1,
    "AL1": _al1,
    "DG1": _dg1,
    "NTE": _nte,
    **ORDER_MAPPERS,
}
