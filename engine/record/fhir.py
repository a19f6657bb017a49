"""FHIR R4 export of one person (``Patient/$everything``): the record as a Bundle of plain JSON dicts.

Mapping (docs/record.md): Patient; visits -> Encounter; AL1 -> AllergyIntolerance; DG1 ->
Condition; PR1 -> Procedure; IN1/IN2 -> Coverage; SCH and its resources -> Appointment; orders ->
ServiceRequest and, when they have results, DiagnosticReport; OBX -> Observation (ED values become
the report's presentedForm, as R4 Observation has no attachment value); FT1 -> ChargeItem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.fhirmap.common import (
    ADDRESS_USE,
    ALLERGY_CATEGORY,
    APPOINTMENT_STATUS,
    CRITICALITY,
    ENCOUNTER_CLASS,
    GENDER,
    NAME_USE,
    RELATIONSHIP,
    TRANSACTION_TYPES,
    authority_uri,
    compact,
    concept,
    entity_identifiers,
    reference,
    ssn_identifier,
    telecom,
)
from engine.record.fhir_results import order_resources

if TYPE_CHECKING:  # the Bundle of a record already read (``bundle``) is made without SQLAlchemy
    import sqlalchemy as sa

__all__ = ["LOCAL_BASE", "bundle", "everything", "patient_resource"]

#: The base of the resources' full URLs when no server's is known (``hl7engine patient show --fhir``).
LOCAL_BASE = "urn:hl7engine:fhir"


def everything(engine: sa.Engine, patient_id: int, *, base_url: str = LOCAL_BASE) -> dict | None:
    """The Bundle (searchset) of the patient and all about them; None for an unknown patient. Blocks."""
    from engine.record.query import get_patient  # SQLAlchemy: only when the record is read here

    record = get_patient(engine, patient_id)
    if record is None:
        return None
    return bundle(record, base_url=base_url)


def bundle(record: dict, *, base_url: str) -> dict:
    """The searchset Bundle of a ``get_patient`` record."""
    resources = [patient_resource(record)]
    subject = {"reference": f"Patient/{record['id']}"}
    # A visit merged into another (A42) is part of it: its facts moved there.
    resources += [_encounter(visit, subject) for visit in record["visits"] if visit["merged_into_id"] is None]
    resources += [_allergy(allergy, subject) for allergy in record["allergies"]]
    resources += [_condition(diagnosis, subject) for diagnosis in record["diagnoses"]]
    resources += [_procedure(procedure, subject) for procedure in record["procedures"]]
    resources += [_coverage(coverage, subject) for coverage in record["coverages"]]
    resources += [_appointment(appointment, subject) for appointment in record["appointments"]]
    for order in record["orders"]:
        resources += order_resources(order, subject)
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


def patient_resource(record: dict) -> dict:
    """The Patient resource of a ``get_patient`` record."""
    identifiers = [
        {
            "use": "old" if identifier["alias"] else "usual",
            "type": concept(identifier["type_code"], None, "HL70203"),
            "system": authority_uri(identifier["authority"]),
            "value": identifier["value"],
            "assigner": {"display": identifier["authority"]},
        }
        for identifier in record["identifiers"]
    ]
    if record["ssn"]:
        identifiers.append(ssn_identifier(record["ssn"], use="official"))
    names = [
        {
            "use": NAME_USE.get(name["name_type"] or ""),
            "family": name["family"],
            "given": [part for part in (name["given"], name["middle"]) if part],
            "prefix": [name["prefix"]] if name["prefix"] else [],
            "suffix": [name["suffix"]] if name["suffix"] else [],
        }
        for name in record["names"]
    ]
    telecoms = [telecom(point["value"], point["use"], point["equipment"]) for point in record["telecoms"]]
    addresses = [
        {
            "use": ADDRESS_USE.get(address["address_type"] or ""),
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
                concept(
                    contact["relationship_code"], contact["relationship_text"], contact["relationship_system"]
                )
            ],
            "name": {"family": contact["family"], "given": [contact["given"]] if contact["given"] else []},
            "telecom": [telecom(contact["phone"], "home", None)] if contact["phone"] else [],
        }
        for contact in record["contacts"]
    ]
    links = (
        [{"other": reference("Patient", record["merged_into"]), "type": "replaced-by"}]
        if record["merged_into"]
        else []
    )
    links += [
        {"other": reference("Patient", merge["prior_id"]), "type": "replaces"}
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
        "gender": GENDER.get((record["sex"] or "")[:1]) if record["sex"] else None,
        "birthDate": record["birth_date"],
        "address": addresses,
        "maritalStatus": concept(record["marital_status"], None, "HL70002"),
        "contact": contacts,
        "communication": [{"language": concept(record["language"], None)}] if record["language"] else [],
        "link": links,
    }
    if record["deceased_at"]:
        patient["deceasedDateTime"] = record["deceased_at"]
    elif record["deceased"] is not None:
        patient["deceasedBoolean"] = record["deceased"]
    return compact(patient)


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
    class_code = ENCOUNTER_CLASS.get(visit["patient_class"] or "")
    encounter_class = (
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_code}
        if class_code
        else {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
    )
    return compact(
        {
            "resourceType": "Encounter",
            "id": str(visit["id"]),
            "status": visit["status"],
            "class": encounter_class,
            "identifier": [{"value": visit["visit_number"]}] if visit["visit_number"] else [],
            "subject": subject,
            "account": [{"type": "Account", "identifier": {"value": visit["account_number"]}}]
            if visit["account_number"]
            else [],
            "period": {"start": visit["admitted_at"], "end": visit["discharged_at"]},
            "participant": participants,
            "serviceType": concept(visit["hospital_service"], None),
            "reasonCode": [concept(None, visit["admit_reason"])],
            "location": [{"location": {"display": location}}] if location else [],
            "hospitalization": {
                "dischargeDisposition": concept(visit["discharge_disposition"], None, "HL70112")
            },
        }
    )


def _allergy(allergy: dict, subject: dict) -> dict:
    return compact(
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
            "category": [ALLERGY_CATEGORY.get(allergy["allergy_type"] or "")],
            "criticality": CRITICALITY.get(allergy["severity"] or ""),
            "code": concept(allergy["code"], allergy["text"], allergy["system"]),
            "patient": subject,
            "recordedDate": allergy["identified_date"],
            "reaction": [{"manifestation": [{"text": allergy["reaction"]}]}] if allergy["reaction"] else [],
        }
    )


def _condition(diagnosis: dict, subject: dict) -> dict:
    return compact(
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
            "code": concept(diagnosis["code"], diagnosis["text"], diagnosis["system"]),
            "subject": subject,
            "encounter": reference("Encounter", diagnosis["visit_id"]),
            "recordedDate": diagnosis["diagnosed_at"],
        }
    )


def _procedure(procedure: dict, subject: dict) -> dict:
    return compact(
        {
            "resourceType": "Procedure",
            "id": str(procedure["id"]),
            "status": "completed",
            "code": concept(procedure["code"], procedure["text"], procedure["system"]),
            "subject": subject,
            "encounter": reference("Encounter", procedure["visit_id"]),
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
        RELATIONSHIP.get(coverage["relationship"] or "", "other") if coverage["relationship"] else None
    )
    return compact(
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
    status = APPOINTMENT_STATUS.get((appointment["status"] or "").lower(), "booked")
    participants = [{"actor": {**subject}, "status": "accepted"}]
    services = []
    for resource in appointment["resources"]:
        if resource["kind"] == "service":
            services.append(concept(resource["code"], resource["text"], resource["system"]))
        else:
            participants.append(
                {
                    "actor": {"display": resource["text"] or resource["code"]},
                    "status": "accepted",
                    "type": [{"text": resource["role"]}] if resource["role"] else [],
                }
            )
    timed = appointment["start_at"] and appointment["end_at"]
    return compact(
        {
            "resourceType": "Appointment",
            "id": str(appointment["id"]),
            "status": status,
            "identifier": entity_identifiers(
                ("FILL", appointment["filler_id"], appointment["filler_namespace"]),
                ("PLAC", appointment["placer_id"], appointment["placer_namespace"]),
            ),
            "serviceType": services,
            "appointmentType": concept(
                appointment["type_code"], appointment["type_text"], appointment["type_system"]
            ),
            "reasonCode": [
                concept(appointment["reason_code"], appointment["reason_text"], appointment["reason_system"])
            ],
            "start": appointment["start_at"] if timed else None,
            "end": appointment["end_at"] if timed else None,
            "minutesDuration": appointment["duration_minutes"]
            if appointment["duration_minutes"] and appointment["duration_minutes"] > 0
            else None,
            "participant": participants,
        }
    )


def _charge(transaction: dict, subject: dict) -> dict:
    kind = transaction["transaction_type"]
    type_coding = (
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0017",
            "code": kind,
            "display": TRANSACTION_TYPES.get(kind),
        }
        if kind
        else None
    )
    code = concept(
        transaction["code"],
        transaction["text"],
        transaction["system"],
        *([type_coding] if type_coding else []),
    )
    amount = transaction["amount"]
    return compact(
        {
            "resourceType": "ChargeItem",
            "id": str(transaction["id"]),
            "identifier": [{"value": transaction["transaction_id"]}] if transaction["transaction_id"] else [],
            "status": "billed",
            "code": code or {"text": TRANSACTION_TYPES.get(kind, "Transaction")},
            "subject": subject,
            "context": reference("Encounter", transaction["visit_id"]),
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
                concept(d.get("code"), d.get("text"), d.get("system")) for d in transaction["diagnoses"] or []
            ],
        }
    )
