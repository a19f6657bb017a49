"""What every FHIR resource of the export is built from: code systems, concepts, references.

Shared by the patient-level resources (``engine.record.fhir``) and the results
(``engine.record.fhir_results``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

__all__ = [
    "CODE_SYSTEMS",
    "authority_uri",
    "compact",
    "concept",
    "entity_identifiers",
    "namespace_uri",
    "reference",
    "system_uri",
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
