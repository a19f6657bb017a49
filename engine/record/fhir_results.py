"""FHIR R4 export of a person's orders and results: ServiceRequest, DiagnosticReport, Observation.

An order becomes a ServiceRequest and, when it has results, a DiagnosticReport; each OBX an
Observation (ED values become the report's presentedForm, as R4 Observation has no attachment
value). Part of ``engine.record.fhir``'s Bundle.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from engine.record.fhir_common import compact, concept, entity_identifiers, reference

__all__ = ["order_resources"]

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


def order_resources(order: dict, subject: dict) -> list[dict]:
    """The ServiceRequest of an order and, when it has results, its DiagnosticReport and Observations."""
    code = concept(order["code"], order["text"], order["system"]) or {"text": "Order"}
    identifiers = entity_identifiers(
        ("PLAC", order["placer_number"], order["placer_namespace"]),
        ("FILL", order["filler_number"], order["filler_namespace"]),
    )
    request_status = _REQUEST_STATUS.get(order["status"] or "", "active" if order["status"] else "unknown")
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
        _attachment(observation)
        for observation in order["observations"]
        if observation["value_type"] == "ED" and observation["value"]
    ]
    report = compact(
        {
            "resourceType": "DiagnosticReport",
            "id": str(order["id"]),
            "identifier": identifiers,
            "basedOn": [reference("ServiceRequest", order["id"])],
            "status": _report_status(order),
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


def _report_status(order: dict) -> str:
    """OBR-25's status; without it the results': any preliminary, else any corrected, else all final."""
    if order["status"]:
        return _REPORT_STATUS.get(order["status"], "unknown")
    every = {_OBSERVATION_STATUS.get(o["status"], "unknown") for o in order["observations"]}
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
    return compact({"contentType": observation["media_type"], "data": data, "title": title})


def _observation(observation: dict, order: dict, subject: dict) -> dict:
    resource = {
        "resourceType": "Observation",
        "id": str(observation["id"]),
        "basedOn": [reference("ServiceRequest", order["id"])],
        "status": _OBSERVATION_STATUS.get(observation["status"], "unknown"),
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
    resource.update(_value(observation))
    return compact(resource)


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
