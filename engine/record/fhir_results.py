"""FHIR R4 export of a person's orders and results: ServiceRequest, DiagnosticReport, Observation.

An order becomes a ServiceRequest and, when it has results, a DiagnosticReport; each OBX an
Observation (ED values become the report's presentedForm, as R4 Observation has no attachment
value). Part of ``engine.record.fhir``'s Bundle.
"""

from __future__ import annotations

from engine.fhirmap.common import (
    OBSERVATION_STATUS,
    REQUEST_STATUS,
    attachment,
    compact,
    concept,
    entity_identifiers,
    observation_value,
    reference,
    report_status,
)

__all__ = ["order_resources"]


def order_resources(order: dict, subject: dict) -> list[dict]:
    """The ServiceRequest of an order and, when it has results, its DiagnosticReport and Observations."""
    code = concept(order["code"], order["text"], order["system"]) or {"text": "Order"}
    identifiers = entity_identifiers(
        ("PLAC", order["placer_number"], order["placer_namespace"]),
        ("FILL", order["filler_number"], order["filler_namespace"]),
    )
    request_status = REQUEST_STATUS.get(order["status"] or "", "active" if order["status"] else "unknown")
    request = compact(
        {
            "resourceType": "ServiceRequest",
            "id": str(order["id"]),
            "identifier": identifiers,
            "status": request_status,
            "intent": "order",
            "code": code,
            "subject": subject,
            "encounter": reference("Encounter", order["visit_id"]),
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
        attachment(observation)
        for observation in order["observations"]
        if observation["value_type"] == "ED" and observation["value"]
    ]
    report = compact(
        {
            "resourceType": "DiagnosticReport",
            "id": str(order["id"]),
            "identifier": identifiers,
            "basedOn": [reference("ServiceRequest", order["id"])],
            "status": report_status(order["status"], (o["status"] for o in order["observations"])),
            "code": code,
            "subject": subject,
            "encounter": reference("Encounter", order["visit_id"]),
            "effectiveDateTime": order["observed_at"],
            "issued": order["reported_at"],
            "result": [reference("Observation", observation["id"]) for observation in observations],
            "presentedForm": forms,
        }
    )
    return [request, report, *observations]


def _observation(observation: dict, order: dict, subject: dict) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": str(observation["id"]),
        "basedOn": [reference("ServiceRequest", order["id"])],
        "status": OBSERVATION_STATUS.get(observation["status"], "unknown"),
        "code": concept(observation["code"], observation["text"], observation["system"])
        or {"text": "Observation"},
        "subject": subject,
        "encounter": reference("Encounter", order["visit_id"]),
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
    resource.update(observation_value(observation))
    return compact(resource)
