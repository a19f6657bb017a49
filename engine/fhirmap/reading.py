"""Reading v2 fields into FHIR datatypes: dates with their precision, identifiers, names, addresses.

A ``Field`` is one repetition of a field; ``field(i, j)`` reads its component ``i``, subcomponent
``j`` unescaped. HL7's explicit null (``""``) reads as empty: FHIR has no element for it.
"""

from __future__ import annotations

import re
from datetime import tzinfo

from engine.fhirmap.common import (
    ADDRESS_USE,
    NAME_USE,
    authority_uri,
    compact,
    concept,
    namespace_uri,
    system_uri,
    telecom,
)
from engine.hl7.dtm import parse_dtm, parse_partial_date
from engine.hl7.message import Delimiters, Segment, unescape

__all__ = [
    "Field",
    "address",
    "coded",
    "entity_identifier",
    "entity_system",
    "fhir_datetime",
    "fhir_instant",
    "human_name",
    "identifier",
    "identifier_system",
    "person_reference",
    "repetitions",
    "telecoms",
]

_URI = re.compile(r"(https?|urn):\S+")
_OID = re.compile(r"\d+(\.\d+)+")


class Field:
    """One repetition of a field, read by component and subcomponent."""

    __slots__ = ("_components", "_delimiters")

    def __init__(self, raw: str, delimiters: Delimiters):
        self._delimiters = delimiters
        self._components = raw.split(delimiters.component)

    def __call__(self, component: int = 1, subcomponent: int = 1) -> str:
        """The unescaped text at ``component.subcomponent`` (1-based); '' when absent or null."""
        if not 0 < component <= len(self._components):
            return ""
        text = self._components[component - 1]
        separator = self._delimiters.subcomponent
        if separator is not None:
            parts = text.split(separator)
            text = parts[subcomponent - 1] if 0 < subcomponent <= len(parts) else ""
        elif subcomponent != 1:
            return ""
        text = unescape(text, self._delimiters).strip()
        return "" if text == '""' else text

    def __bool__(self) -> bool:
        return any(self(n) for n in range(1, len(self._components) + 1))


def repetitions(segment: Segment, n: int, delimiters: Delimiters) -> list[Field]:
    """The non-empty repetitions of field ``n``."""
    raw = segment.field(n)
    if not raw:
        return []
    found = [Field(part, delimiters) for part in raw.split(delimiters.repetition)]
    return [item for item in found if item]


def fhir_datetime(text: str, zone: tzinfo) -> str | None:
    """A DTM/TS as a FHIR dateTime of the precision written; a time without offset is read in ``zone``.

    FHIR wants seconds and an offset once there is a time: minutes and seconds not written are 00.
    """
    text = text.strip()
    moment = parse_dtm(text)
    if moment is None:
        return parse_partial_date(text) if text[:8].isdigit() else None
    if moment.digits <= 8:
        return "-".join(part for part in (text[:4], text[4:6], text[6:8]) if part)
    value = moment.value if moment.has_offset else moment.value.replace(tzinfo=zone)
    written = value.replace(microsecond=0).isoformat()
    if moment.fraction_digits:
        fraction = f"{value.microsecond:06d}"[: moment.fraction_digits]
        written = f"{written[:19]}.{fraction}{written[19:]}"
    return written


def fhir_instant(text: str, zone: tzinfo) -> str | None:
    """A DTM/TS as a FHIR instant (a time to the second with offset); None when only a date was written."""
    written = fhir_datetime(text, zone)
    return written if written and "T" in written else None


def identifier_system(namespace: str, universal: str, universal_type: str) -> str | None:
    """The system URI of an assigning authority (HD): its OID or URI when given, else its namespace."""
    if universal and (universal_type.upper() == "ISO" or _OID.fullmatch(universal)):
        return f"urn:oid:{universal}"
    if universal and _URI.fullmatch(universal):
        return universal
    if namespace:
        return authority_uri(namespace)
    return None


def entity_system(namespace: str, universal: str, universal_type: str) -> str | None:
    """The system URI of an EI's id (placer/filler, appointment, specimen numbers): its OID or URI
    when given, else its namespace as the record names an order's or appointment's (``namespace_uri``).
    """
    return identifier_system("", universal, universal_type) or namespace_uri(namespace)


def identifier(cx: Field, *, type_code: str | None = None, use: str | None = None) -> dict | None:
    """An Identifier of a CX (EI reads the same way for .1-.4): value, system from the authority, type."""
    value = cx(1)
    if not value:
        return None
    system = identifier_system(cx(4, 1), cx(4, 2), cx(4, 3))
    return compact(
        {
            "use": use,
            "type": concept(cx(5) or type_code, None, "HL70203"),
            "system": system,
            "value": value,
            "assigner": {"display": cx(4, 1)} if cx(4, 1) else None,
        }
    )


def entity_identifier(ei: Field, type_code: str | None = None) -> dict | None:
    """An Identifier of an EI (placer/filler numbers): the id, its system from universal id or namespace."""
    value = ei(1)
    if not value:
        return None
    return compact(
        {
            "type": concept(type_code, None, "HL70203"),
            "system": entity_system(ei(2), ei(3), ei(4)),
            "value": value,
        }
    )


def coded(cwe: Field, default_system: str | None = None) -> dict | None:
    """A CodeableConcept of a CE/CWE/CNE (first triplet, and the alternate one when present)."""
    alternate = [{"system": system_uri(cwe(6)), "code": cwe(4), "display": cwe(5) or None}] if cwe(4) else []
    return concept(cwe(1) or None, cwe(2) or None, cwe(3) or default_system, *compact(alternate))


def human_name(xpn: Field, *, family: int = 1) -> dict | None:
    """A HumanName of an XPN (XCN with ``family=2``: its components shift by one)."""
    shift = family - 1
    given = [part for part in (xpn(2 + shift), xpn(3 + shift)) if part]
    name = compact(
        {
            "use": NAME_USE.get(xpn(7 + shift)) if not shift else None,
            "family": xpn(1 + shift),
            "given": given,
            "suffix": [xpn(4 + shift)] if xpn(4 + shift) else [],
            "prefix": [xpn(5 + shift)] if xpn(5 + shift) else [],
        }
    )
    return name or None


def person_reference(xcn: Field) -> dict | None:
    """A Reference to a person of an XCN, by display name and identifier (no Practitioner is created)."""
    name = human_name(xcn, family=2) or {}
    display = " ".join([*name.get("prefix", []), *name.get("given", []), name.get("family", "")]).strip()
    person_id = xcn(1)
    ident = (
        compact({"system": identifier_system(xcn(9, 1), xcn(9, 2), xcn(9, 3)), "value": person_id})
        if person_id
        else None
    )
    reference = compact({"display": display, "identifier": ident})
    return reference or None


def address(xad: Field) -> dict | None:
    """An Address of an XAD."""
    value = compact(
        {
            "use": ADDRESS_USE.get(xad(7)),
            "line": [line for line in (xad(1, 1), xad(2)) if line],
            "city": xad(3),
            "state": xad(4),
            "postalCode": xad(5),
            "country": xad(6),
            "district": xad(9),
        }
    )
    return value or None


def telecoms(fields: list[Field], use: str) -> list[dict]:
    """ContactPoints of XTN repetitions: email (XTN-4), the number (XTN-12, parts 5-8, or XTN-1)."""
    found = []
    for xtn in fields:
        parts = " ".join(part for part in (xtn(5) and f"+{xtn(5)}", xtn(6), xtn(7)) if part)
        if xtn(8):
            parts += f" ext. {xtn(8)}"
        value = xtn(4) or xtn(12) or parts or xtn(1)
        if value:
            point_use = {"PRN": "home", "WPN": "work", "ORN": "home", "VHN": "home"}.get(xtn(2), use)
            found.append(telecom(value, point_use, xtn(3) or None))
    return found
