"""FHIR R4 export of one person (``Patient/$everything``): the record as a Bundle of plain JSON dicts.

Mapping (docs/record.md): Patient; visits -> Encounter; AL1 -> AllergyIntolerance; DG1 ->
Condition; PR1 -> Procedure; IN1/IN2 -> Coverage; SCH and its resources -> Appointment; orders ->
ServiceRequest and, when they have results, DiagnosticReport; OBX -> Observation (ED values become
the report's presentedForm, as R4 Observation has no attachment value); FT1 -> ChargeItem.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from engine.record.query import get_patient

__all__ = ["CODE_SYSTEMS", "everything"]

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

_GENDER = {"F": "female", "M": "male", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "C": "old"}
_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
_ENCOUNTER_CLASS = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "IMP"}
_ALLERGY_CATEGORY = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
}
_CRITICALITY = {"SV": "high", "MO": "low", "MI": "low"}
_RELATIONSHIP = {"SEL": "self", "SPO": "spouse", "CHD": "child", "DOM": "common"}
_APPOINTMENT_STATUS = {
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
_REQUEST_STATUS = {"F": "completed", "C": "completed", "U": "completed", "X": "revoked"}
_REPORT_STATUS = {
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
_OBSERVATION_STATUS = {
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
_TRANSACTION_TYPES = {"CG": "Charge", "CD": "Credit", "PY": "Payment", "AJ": "Adjustment", "CO": "Co-payment"}


def everything(engine: sa.Engine, patient_id: int, *, base_url: str = "urn:hl7engine:fhir") -> dict | None:
    """The Bundle (searchset) of the patient and all about them; None for an unknown patient. Blocks."""
    record = get_patient(engine, patient_id)
    if record is None:
        return None
    return bundle(record, base_url=base_url)


def bundle(record: dict, *, base_url: str) -> dict:
    """The searchset Bundle of a ``get_patient`` record."""
    resources = [patient_resource(record)]
    subject = {"reference": f"Patient/{record['id']}"}
    resources += [_encounter(visit, subject) for visit in record["visits"]]
    resources += [_allergy(allergy, subject) for allergy in record["allergies"]]
    resources += [_condition(diagnosis, subject) for diagnosis in record["diagnoses"]]
    resources += [_procedure(procedure, subject) for procedure in record["procedures"]]
    resources += [_coverage(coverage, subject) for coverage in record["coverages"]]
    resources += [_appointment(appointment, subject) for appointment in record["appointments"]]
    for order in record["orders"]:
        resources += _order(order, subject)
    resources += [_charge(transaction, subject) for transaction in record["transactions"]]
    base = base_url.rstrip("/")
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [
            {
                "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match" if resource["resourceType"] == "Patient" else "include"},
            }
            for resource in resources
        ],
    }


def _compact(value: Any) -> Any:
    """``value`` without None, empty strings, empty lists and empty dicts (FHIR forbids empty elements)."""
    if isinstance(value, dict):
        cleaned = {key: _compact(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        cleaned = [_compact(item) for item in value]
        return [item for item in cleaned if item not in (None, "", [], {})]
    return value


def _system(name: str | None) -> str | None:
    if not name:
        return None
    table = _V2_TABLE.fullmatch(name.upper())
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    return CODE_SYSTEMS.get(name.upper())


def _concept(code: str | None, text: str | None, system: str | None = None, *extra: dict) -> dict | None:
    codings = [{"system": _system(system), "code": code, "display": text}] if code else []
    concept = _compact({"coding": codings + list(extra), "text": text or code})
    return concept or None


def _authority_uri(authority: str) -> str:
    if _OID.fullmatch(authority):
        return f"urn:oid:{authority}"
    return f"urn:hl7engine:authority:{quote(authority, safe='')}"


def _reference(kind: str, row_id: Any) -> dict | None:
    return {"reference": f"{kind}/{row_id}"} if row_id is not None else None


def patient_resource(record: dict) -> dict:
    """The Patient resource of a ``get_patient`` record."""
    identifiers = [
        {
            "use": "old" if identifier["alias"] else "usual",
            "type": _concept(identifier["type_code"], None, "HL70203"),
            "system": _authority_uri(identifier["authority"]),
            "value": identifier["value"],
            "assigner": {"display": identifier["authority"]},
        }
        for identifier in record["identifiers"]
    ]
    names = [
        {
            "use": _NAME_USE.get(name["name_type"] or ""),
            "family": name["family"],
            "given": [part for part in (name["given"], name["middle"]) if part],
            "prefix": [name["prefix"]] if name["prefix"] else [],
            "suffix": [name["suffix"]] if name["suffix"] else [],
        }
        for name in record["names"]
    ]
    telecoms = [
        _telecom(telecom["value"], telecom["use"], telecom["equipment"]) for telecom in record["telecoms"]
    ]
    addresses = [
        {
            "use": _ADDRESS_USE.get(address["address_type"] or ""),
            "line": [line for line in (address["line1"], address["line2"]) if line],
            "city": address["city"],
            "state": address["state"],
            "postalCode": address["postal_code"],
            "country": address["country"],
        }
        for address in record["addresses"]
    ]
    contacts = [
        {
            "relationship": [
                _concept(
                    contact["relationship_code"], contact["relationship_text"], contact["relationship_system"]
                )
            ],
            "name": {"family": contact["family"], "given": [contact["given"]] if contact["given"] else []},
            "telecom": [_telecom(contact["phone"], "home", None)] if contact["phone"] else [],
        }
        for contact in record["contacts"]
    ]
    links = (
        [{"other": _reference("Patient", record["merged_into"]), "type": "replaced-by"}]
        if record["merged_into"]
        else []
    )
    links += [
        {"other": _reference("Patient", merge["prior_id"]), "type": "replaces"}
        for merge in record["merges"]
        if merge["survivor_id"] == record["id"] and merge["prior_id"] and not merge["unmerged_at"]
    ]
    patient = {
        "resourceType": "Patient",
        "id": str(record["id"]),
        "active": record["merged_into"] is None,
        "identifier": identifiers,
        "name": names,
        "telecom": telecoms,
        "gender": _GENDER.get((record["sex"] or "")[:1]) if record["sex"] else None,
        "birthDate": record["birth_date"],
        "address": addresses,
        "maritalStatus": _concept(record["marital_status"], None, "HL70002"),
        "contact": contacts,
        "communication": [{"language": _concept(record["language"], None)}] if record["language"] else [],
        "link": links,
    }
    if record["deceased_at"]:
        patient["deceasedDateTime"] = record["deceased_at"]
    elif record["deceased"] is not None:
        patient["deceasedBoolean"] = record["deceased"]
    return _compact(patient)


def _telecom(value: str | None, use: str, equipment: str | None) -> dict:
    system = "email" if value and "@" in value else "phone"
    return {"system": system, "value": value, "use": "mobile" if equipment == "CP" else use}


def _encounter(visit: dict, subject: dict) -> dict:
    location = " ".join(
        part for part in (visit["point_of_care"], visit["room"], visit["bed"], visit["facility"]) if part
    )
    participants = [
        {
            "type": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code}
                    ]
                }
            ],
            "individual": {"display": name, "identifier": {"value": person_id} if person_id else None},
        }
        for code, person_id, name in (
            ("ATND", visit["attending_id"], visit["attending_name"]),
            ("REF", visit["referring_id"], visit["referring_name"]),
        )
        if person_id or name
    ]
    class_code = _ENCOUNTER_CLASS.get(visit["patient_class"] or "")
    encounter_class = (
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code}
        if class_code
        else {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
    )
    return _compact(
        {
            "resourceType": "Encounter",
            "id": str(visit["id"]),
            "status": visit["status"],
            "class": encounter_class,
            "identifier": [{"value": visit["visit_number"]}] if visit["visit_number"] else [],
            "subject": subject,
            "period": {"start": visit["admitted_at"], "end": visit["discharged_at"]},
            "participant": participants,
            "serviceType": _concept(visit["hospital_service"], None),
            "reasonCode": [_concept(None, visit["admit_reason"])],
            "location": [{"location": {"display": location}}] if location else [],
            "hospitalization": {
                "dischargeDisposition": _concept(visit["discharge_disposition"], None, "HL70112")
            },
        }
    )


def _allergy(allergy: dict, subject: dict) -> dict:
    return _compact(
        {
            "resourceType": "AllergyIntolerance",
            "id": str(allergy["id"]),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "category": [_ALLERGY_CATEGORY.get(allergy["allergy_type"] or "")],
            "criticality": _CRITICALITY.get(allergy["severity"] or ""),
            "code": _concept(allergy["code"], allergy["text"], allergy["system"]),
            "patient": subject,
            "recordedDate": allergy["identified_date"],
            "reaction": [{"manifestation": [{"text": allergy["reaction"]}]}] if allergy["reaction"] else [],
        }
    )


def _condition(diagnosis: dict, subject: dict) -> dict:
    return _compact(
        {
            "resourceType": "Condition",
            "id": str(diagnosis["id"]),
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
            "code": _concept(diagnosis["code"], diagnosis["text"], diagnosis["system"]),
            "subject": subject,
            "encounter": _reference("Encounter", diagnosis["visit_id"]),
            "recordedDate": diagnosis["diagnosed_at"],
        }
    )


def _procedure(procedure: dict, subject: dict) -> dict:
    return _compact(
        {
            "resourceType": "Procedure",
            "id": str(procedure["id"]),
            "status": "completed",
            "code": _concept(procedure["code"], procedure["text"], procedure["system"]),
            "subject": subject,
            "encounter": _reference("Encounter", procedure["visit_id"]),
            "performedDateTime": procedure["performed_at"],
        }
    )


def _coverage(coverage: dict, subject: dict) -> dict:
    coverage_class = "http://terminology.hl7.org/CodeSystem/coverage-class"
    classes = [
        {"type": {"coding": [{"system": coverage_class, "code": kind}]}, "value": value, "name": name}
        for kind, value, name in (
            ("group", coverage["group_number"], coverage["group_name"]),
            ("plan", coverage["plan_id"], coverage["plan_name"]),
        )
        if value
    ]
    relationship = (
        _RELATIONSHIP.get(coverage["relationship"] or "", "other") if coverage["relationship"] else None
    )
    return _compact(
        {
            "resourceType": "Coverage",
            "id": str(coverage["id"]),
            "status": "active",
            "identifier": [{"value": coverage["policy_number"]}] if coverage["policy_number"] else [],
            "subscriberId": coverage["member_number"],
            "beneficiary": subject,
            "relationship": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                        "code": relationship,
                    }
                ]
            }
            if relationship
            else None,
            "period": {"start": coverage["effective_date"], "end": coverage["expiration_date"]},
            "payor": [
                {
                    "display": coverage["company_name"] or coverage["company_id"] or "unknown payer",
                    "identifier": {"value": coverage["company_id"]} if coverage["company_id"] else None,
                }
            ],
            "class": classes,
        }
    )


def _appointment(appointment: dict, subject: dict) -> dict:
    status = _APPOINTMENT_STATUS.get((appointment["status"] or "").lower(), "booked")
    participants = [{"actor": {**subject}, "status": "accepted"}]
    services = []
    for resource in appointment["resources"]:
        if resource["kind"] == "service":
            services.append(_concept(resource["code"], resource["text"], resource["system"]))
        else:
            participants.append(
                {
                    "actor": {"display": resource["text"] or resource["code"]},
                    "status": "accepted",
                    "type": [{"text": resource["role"]}] if resource["role"] else [],
                }
            )
    timed = appointment["start_at"] and appointment["end_at"]
    return _compact(
        {
            "resourceType": "Appointment",
            "id": str(appointment["id"]),
            "status": status,
            "identifier": [
                {"value": value} for value in (appointment["filler_id"], appointment["placer_id"]) if value
            ],
            "serviceType": services,
            "appointmentType": _concept(
                appointment["type_code"], appointment["type_text"], appointment["type_system"]
            ),
            "reasonCode": [
                _concept(appointment["reason_code"], appointment["reason_text"], appointment["reason_system"])
            ],
            "start": appointment["start_at"] if timed else None,
            "end": appointment["end_at"] if timed else None,
            "minutesDuration": appointment["duration_minutes"]
            if appointment["duration_minutes"] and appointment["duration_minutes"] > 0
            else None,
            "participant": participants,
        }
    )


def _order(order: dict, subject: dict) -> list[dict]:
    code = _concept(order["code"], order["text"], order["system"]) or {"text": "Order"}
    identifiers = [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind}]},
            "value": value,
        }
        for kind, value in (("PLAC", order["placer_number"]), ("FILL", order["filler_number"]))
        if value
    ]
    request_status = _REQUEST_STATUS.get(order["status"] or "", "active" if order["status"] else "unknown")
    request = _compact(
        {
            "resourceType": "ServiceRequest",
            "id": str(order["id"]),
            "identifier": identifiers,
            "status": request_status,
            "intent": "order",
            "code": code,
            "subject": subject,
            "encounter": _reference("Encounter", order["visit_id"]),
            "occurrenceDateTime": order["observed_at"],
            "requester": {
                "display": order["ordering_provider_name"],
                "identifier": {"value": order["ordering_provider_id"]}
                if order["ordering_provider_id"]
                else None,
            },
            "note": [{"text": order["notes"]}] if order["notes"] else [],
        }
    )
    if not order["observations"]:
        return [request]
    observations = [
        _observation(observation, order, subject)
        for observation in order["observations"]
        if observation["value_type"] != "ED"
    ]
    forms = [
        _attachment(observation)
        for observation in order["observations"]
        if observation["value_type"] == "ED" and observation["value"]
    ]
    report = _compact(
        {
            "resourceType": "DiagnosticReport",
            "id": str(order["id"]),
            "identifier": identifiers,
            "basedOn": [_reference("ServiceRequest", order["id"])],
            "status": _REPORT_STATUS.get(order["status"] or "", "unknown"),
            "code": code,
            "subject": subject,
            "encounter": _reference("Encounter", order["visit_id"]),
            "effectiveDateTime": order["observed_at"],
            "issued": order["reported_at"],
            "result": [_reference("Observation", observation["id"]) for observation in observations],
            "presentedForm": forms,
        }
    )
    return [request, report, *observations]


def _attachment(observation: dict) -> dict:
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
    return _compact({"contentType": observation["media_type"], "data": data, "title": title})


def _observation(observation: dict, order: dict, subject: dict) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": str(observation["id"]),
        "basedOn": [_reference("ServiceRequest", order["id"])],
        "status": _OBSERVATION_STATUS.get(observation["status"], "unknown"),
        "code": _concept(observation["code"], observation["text"], observation["system"])
        or {"text": "Observation"},
        "subject": subject,
        "encounter": _reference("Encounter", order["visit_id"]),
        "effectiveDateTime": observation["observed_at"],
        "referenceRange": [{"text": observation["reference_range"]}]
        if observation["reference_range"]
        else [],
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": flag,
                    }
                ]
            }
            for flag in (observation["abnormal_flags"] or "").split("~")
            if flag
        ],
        "performer": [{"display": observation["performing_lab"]}] if observation["performing_lab"] else [],
        "note": [{"text": observation["notes"]}] if observation["notes"] else [],
    }
    resource.update(_value(observation))
    return _compact(resource)


def _quantity(value: float | None, observation: dict, **extra: Any) -> dict:
    units = observation["units"]
    return {"value": value, "unit": units, **extra}


def _value(observation: dict) -> dict:
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
            "valueCodeableConcept": _concept(
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


def _charge(transaction: dict, subject: dict) -> dict:
    kind = transaction["transaction_type"]
    type_coding = (
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0017",
            "code": kind,
            "display": _TRANSACTION_TYPES.get(kind),
        }
        if kind
        else None
    )
    code = _concept(
        transaction["code"],
        transaction["text"],
        transaction["system"],
        *([type_coding] if type_coding else []),
    )
    amount = transaction["amount"]
    return _compact(
        {
            "resourceType": "ChargeItem",
            "id": str(transaction["id"]),
            "identifier": [{"value": transaction["transaction_id"]}] if transaction["transaction_id"] else [],
            "status": "billed",
            "code": code or {"text": _TRANSACTION_TYPES.get(kind, "Transaction")},
            "subject": subject,
            "context": _reference("Encounter", transaction["visit_id"]),
            "occurrenceDateTime": transaction["transaction_at"],
            "enteredDate": transaction["posted_at"],
            "quantity": {"value": float(transaction["quantity"])}
            if transaction["quantity"] is not None
            else None,
            "priceOverride": {"value": float(amount), "currency": transaction["currency"]}
            if amount is not None
            else None,
            "performer": [{"actor": {"display": transaction["performed_by"]}}]
            if transaction["performed_by"]
            else [],
            "reason": [
                _concept(d.get("code"), d.get("text"), d.get("system"))
                for d in transaction["diagnoses"] or []
            ],
        }
    )
