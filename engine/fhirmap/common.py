"""What every FHIR resource we build is made of: code systems, concepts, references, v2 value maps.

Shared by the record's ``$everything`` export (``engine.record.fhir``, ``engine.record.fhir_results``)
and the mapping of a v2 message to a transaction Bundle (``engine.fhirmap.bundle``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

__all__ = [
    "ADDRESS_USE",
    "ALLERGY_CATEGORY",
    "APPOINTMENT_STATUS",
    "CODE_SYSTEMS",
    "CRITICALITY",
    "ENCOUNTER_CLASS",
    "GENDER",
    "NAME_USE",
    "OBSERVATION_STATUS",
    "RELATIONSHIP",
    "REPORT_STATUS",
    "REQUEST_STATUS",
    "TRANSACTION_TYPES",
    "attachment",
    "authority_uri",
    "compact",
    "concept",
    "entity_identifiers",
    "namespace_uri",
    "observation_value",
    "reference",
    "report_status",
    "ssn_identifier",
    "system_uri",
    "telecom",
]

#: HL7 v2 coding system names (table 0396) and their FHIR URIs.
CODE_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "UCUM": "http://unitsofmeasure.org",
    "CVX": "http://hl7.org/fhir/sid/cvx",
}


_V2_TABLE = re.compile(r"HL7(\d{4})")


_OID = re.compile(r"\d+(\.\d+)+")


def compact(value: Any) -> Any:
    """``value`` without None, empty strings, empty lists and empty dicts (FHIR forbids empty elements)."""
    if isinstance(value, dict):
        cleaned = {key: compact(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        cleaned = [compact(item) for item in value]
        return [item for item in cleaned if item not in (None, "", [], {})]
    return value


def system_uri(name: str | None) -> str | None:
    """The FHIR URI of a v2 coding system name (HL7nnnn tables, LN, SCT, ...); None when unknown."""
    if not name:
        return None
    table = _V2_TABLE.fullmatch(name.upper())
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    return CODE_SYSTEMS.get(name.upper())


def concept(code: str | None, text: str | None, system: str | None = None, *extra: dict) -> dict | None:
    """A CodeableConcept of a v2 coded value (and ``extra`` codings); None when it says nothing."""
    codings = [{"system": system_uri(system), "code": code, "display": text}] if code else []
    value = compact({"coding": codings + list(extra), "text": text or code})
    return value or None


def authority_uri(authority: str) -> str:
    """The identifier system URI of an assigning authority: an OID as urn:oid, else our own URN."""
    if _OID.fullmatch(authority):
        return f"urn:oid:{authority}"
    return f"urn:hl7engine:authority:{quote(authority, safe='')}"


def namespace_uri(namespace: str | None) -> str | None:
    """The identifier system of an appointment or order id's namespace: urn:oid, else our own URN."""
    if not namespace:
        return None
    if _OID.fullmatch(namespace):
        return f"urn:oid:{namespace}"
    return f"urn:hl7engine:id:{quote(namespace, safe='')}"


def entity_identifiers(*ids: tuple[str | None, str | None, str | None]) -> list[dict]:
    """Identifiers of (v2-0203 type or None, value, namespace) ids with a value, each (system, value) once."""
    found: list[dict] = []
    seen: set[tuple[str | None, str]] = set()
    for kind, value, namespace in ids:
        system = namespace_uri(namespace)
        if not value or (system, value) in seen:
            continue
        seen.add((system, value))
        identifier = {"system": system, "value": value}
        if kind:
            identifier["type"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind}]
            }
        found.append(compact(identifier))
    return found


def reference(kind: str, row_id: Any) -> dict | None:
    """A Reference to ``kind/row_id``; None when there is no row."""
    return {"reference": f"{kind}/{row_id}"} if row_id is not None else None


GENDER = {"F": "female", "M": "male", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "C": "old"}
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
ENCOUNTER_CLASS = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "IMP"}
ALLERGY_CATEGORY = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
}
CRITICALITY = {"SV": "high", "MO": "low", "MI": "low"}
RELATIONSHIP = {"SEL": "self", "SPO": "spouse", "CHD": "child", "DOM": "common"}
APPOINTMENT_STATUS = {
    "booked": "booked",
    "cancelled": "cancelled",
    "noshow": "noshow",
    "deleted": "entered-in-error",
    "complete": "fulfilled",
    "started": "arrived",
    "arrived": "arrived",
    "pending": "pending",
    "waitlist": "waitlist",
    "overbook": "booked",
    "dc": "cancelled",
}
TRANSACTION_TYPES = {"CG": "Charge", "CD": "Credit", "PY": "Payment", "AJ": "Adjustment", "CO": "Co-payment"}


REQUEST_STATUS = {"F": "completed", "C": "completed", "U": "completed", "X": "revoked"}


REPORT_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "A": "partial",
    "R": "partial",
    "X": "cancelled",
    "I": "registered",
    "O": "registered",
    "S": "registered",
}


OBSERVATION_STATUS = {
    "F": "final",
    "U": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "I": "registered",
    "X": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
}


def report_status(result_status: str | None, observation_statuses: Iterable[str | None]) -> str:
    """A DiagnosticReport's status: OBR-25's; without it the results' (OBX-11): any preliminary (or
    registered), else any corrected, else all final; all cancelled is cancelled. Cancelled and
    entered-in-error results do not vote.
    """
    if result_status:
        return REPORT_STATUS.get(result_status, "unknown")
    every = {OBSERVATION_STATUS.get(status or "", "unknown") for status in observation_statuses}
    statuses = every - {"cancelled", "entered-in-error"}
    if every == {"cancelled"}:
        return "cancelled"
    if "preliminary" in statuses or "registered" in statuses:
        return "preliminary"
    if "corrected" in statuses and statuses <= {"corrected", "final"}:
        return "corrected"
    if statuses == {"final"}:
        return "final"
    return "unknown"


def ssn_identifier(value: str, **more: str) -> dict:
    """A US social security number (PID-19) as an Identifier of system us-ssn, typed SS (table 0203)."""
    return {
        **more,
        "type": concept("SS", None, "HL70203"),
        "system": "http://hl7.org/fhir/sid/us-ssn",
        "value": value,
    }


def telecom(value: str | None, use: str | None, equipment: str | None) -> dict:
    """A ContactPoint: an email when the value has an @, else a phone; CP equipment makes it mobile."""
    system = "email" if value and "@" in value else "phone"
    return {"system": system, "value": value, "use": "mobile" if equipment == "CP" else use}


def attachment(observation: dict) -> dict:
    """An ED value as an Attachment; Base64 data that does not decode is left out (the title says so)."""
    data = observation["value"]
    title = observation["text"]
    if (observation["encoding"] or "").upper() == "BASE64":
        data = "".join(data.split())
        try:
            base64.b64decode(data, validate=True)
        except ValueError:
            data, title = None, f"{title or 'attachment'} (not exported: its Base64 data does not decode)"
    else:
        data = base64.b64encode(data.encode("utf-8", "surrogateescape")).decode("ascii")
    return compact({"contentType": observation["media_type"], "data": data, "title": title})


def _quantity(value: float | None, observation: dict, **extra: Any) -> dict:
    units = observation["units"]
    return {"value": value, "unit": units, **extra}


def observation_value(observation: dict) -> dict:
    """The value[x] element of an OBX read into the record's observation columns ({} without a value)."""
    kind = observation["value_type"]
    number, high = observation["numeric_value"], observation["numeric_high"]
    if observation["value"] is None and number is None:
        return {}
    if kind == "NM" and number is not None:
        return {"valueQuantity": _quantity(number, observation)}
    if kind == "SN" and number is not None:
        separator = observation["separator"]
        if separator in (":", "/") and high is not None:
            return {"valueRatio": {"numerator": {"value": number}, "denominator": {"value": high}}}
        if separator == "-" and high is not None:
            return {
                "valueRange": {"low": _quantity(number, observation), "high": _quantity(high, observation)}
            }
        comparator = observation["comparator"]
        if high is None and comparator in ("<", ">", "<=", ">="):
            return {"valueQuantity": _quantity(number, observation, comparator=comparator)}
        if high is None and not comparator:
            return {"valueQuantity": _quantity(number, observation)}
    if kind in ("CE", "CWE", "CNE", "CF"):
        return {
            "valueCodeableConcept": concept(
                observation["coded_code"], observation["coded_text"], observation["coded_system"]
            )
        }
    if (
        kind in ("DT", "TS", "DTM")
        and observation["value"]
        and re.match(r"\d{4}(-\d{2}(-\d{2}(T.*)?)?)?$", observation["value"])
    ):
        return {"valueDateTime": observation["value"]}
    return {"valueString": observation["value"]}
