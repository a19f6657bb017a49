"""engine/record/fhir.py: the $everything Bundle is valid FHIR R4 and says what the record says."""

from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from engine.hl7.message import Message
from engine.record.fhir import everything
from tests.fakes.record import JOURNEY, PID, RECEIVED, corpus_messages, hl7, store_message

BASE = "http://engine.example/fhir"

# Required bindings the models do not check (they accept any code): the R4 value sets.
STATUSES = {
    "Encounter": {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Procedure": {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    },
    "Coverage": {"active", "cancelled", "draft", "entered-in-error"},
    "Appointment": {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    },
    "ServiceRequest": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    "DiagnosticReport": {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Observation": {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "ChargeItem": {"planned", "billable", "not-billable", "aborted", "billed", "entered-in-error", "unknown"},
}


def validate(bundle: dict) -> None:
    """The Bundle and every resource construct with the fhir.resources R4B models; required statuses bind."""
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        if resource["resourceType"] in STATUSES:
            assert resource["status"] in STATUSES[resource["resourceType"]], resource
        assert entry["fullUrl"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"


def _V2_0203(code: str) -> dict:  # noqa: N802 (reads as the table it names)
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind]


@pytest.fixture
def journey_bundle(feed) -> dict:
    """The $everything Bundle of patient 1 after the whole journey."""
    for name in JOURNEY:
        feed(name)
    return everything(feed.engine, 1, base_url=BASE)


def test_journey_bundle_is_valid_r4(journey_bundle):
    """Every resource of the journey's Bundle passes the R4 models, in the expected order and count."""
    validate(journey_bundle)
    assert (journey_bundle["resourceType"], journey_bundle["type"], journey_bundle["total"]) == (
        "Bundle",
        "searchset",
        1,
    )
    assert [entry["resource"]["resourceType"] for entry in journey_bundle["entry"]] == [
        "Patient",
        "Encounter",
        "Encounter",
        "Encounter",
        "AllergyIntolerance",
        "Condition",
        "Procedure",
        "Coverage",
        "Appointment",
        "ServiceRequest",
        "DiagnosticReport",
        *["Observation"] * 5,
        "ServiceRequest",
        "DiagnosticReport",
        *["Observation"] * 4,
        "ChargeItem",
        "ChargeItem",
        "ChargeItem",
    ]
    assert [entry["search"]["mode"] for entry in journey_bundle["entry"]][:2] == ["match", "include"]


def test_journey_patient_resource(journey_bundle):
    """The Patient: identifiers (merged: old), name, telecom, address, contact, link to the duplicate."""
    (patient,) = _resources(journey_bundle, "Patient")
    v2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert patient == {
        "resourceType": "Patient",
        "id": "1",
        "active": True,
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": v2_0203, "code": "PI"}], "text": "PI"},
                "system": "urn:hl7engine:authority:NORTHPMS",
                "value": "PMS-100234",
                "assigner": {"display": "NORTHPMS"},
            },
            {
                "use": "usual",
                "type": {"coding": [{"system": v2_0203, "code": "MR"}], "text": "MR"},
                "system": "urn:hl7engine:authority:STMARY_EMR",
                "value": "MRN-556677",
                "assigner": {"display": "STMARY_EMR"},
            },
            {
                "use": "usual",
                "type": {"coding": [{"system": v2_0203, "code": "PI"}], "text": "PI"},
                "system": "urn:hl7engine:authority:CITYLAB",
                "value": "L-9981",
                "assigner": {"display": "CITYLAB"},
            },
            {
                "use": "old",
                "type": {"coding": [{"system": v2_0203, "code": "PI"}], "text": "PI"},
                "system": "urn:hl7engine:authority:NORTHPMS",
                "value": "PMS-100299",
                "assigner": {"display": "NORTHPMS"},
            },
        ],
        "name": [{"use": "official", "family": "GARCÍA", "given": ["MARÍA", "ELENA"]}],
        "telecom": [
            {"system": "phone", "value": "+1 (217) 5550101", "use": "home"},
            {"system": "email", "value": "maria.garcia@example.org", "use": "home"},
            {"system": "phone", "value": "+1 (217) 5550199", "use": "work"},
        ],
        "gender": "female",
        "birthDate": "1980-05-17",
        "address": [
            {
                "use": "home",
                "line": ["12 Calle Mayor", "Apt 3"],
                "city": "Springfield",
                "state": "IL",
                "postalCode": "62701",
                "country": "USA",
            }
        ],
        "maritalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0002", "code": "M"}],
            "text": "M",
        },
        "contact": [
            {
                "relationship": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0063",
                                "code": "SPO",
                                "display": "Spouse",
                            }
                        ],
                        "text": "Spouse",
                    }
                ],
                "name": {"family": "GARCIA", "given": ["JUAN"]},
                "telecom": [{"system": "phone", "value": "+1 (217) 5550102", "use": "home"}],
            }
        ],
        "communication": [{"language": {"coding": [{"code": "spa"}], "text": "spa"}}],
        "link": [{"other": {"reference": "Patient/2"}, "type": "replaces"}],
    }


def test_journey_encounters_and_clinical_resources(journey_bundle):
    """Encounters with class, period, location and participants; allergy, condition, procedure, coverage."""
    encounters = _resources(journey_bundle, "Encounter")
    assert [(e["id"], e["status"], e["class"]["code"], e["identifier"][0]["value"]) for e in encounters] == [
        ("1", "in-progress", "AMB", "V-PMS-5001"),
        ("2", "in-progress", "IMP", "ENC-88001"),
        ("3", "in-progress", "AMB", "V-PMS-5002"),
    ]
    inpatient = encounters[1]
    assert inpatient["period"] == {"start": "2024-03-20T07:10:00+00:00"}
    assert inpatient["location"] == [{"location": {"display": "4N 402 A STMARY"}}]
    assert [p["individual"] for p in inpatient["participant"]] == [
        {"display": "DR GREGORY HOUSE", "identifier": {"value": "5678"}},
        {"display": "DR MARCUS WELBY", "identifier": {"value": "1234"}},
    ]
    assert inpatient["reasonCode"] == [{"text": "Chest pain, unspecified"}]
    (allergy,) = _resources(journey_bundle, "AllergyIntolerance")
    assert (
        allergy["category"],
        allergy["criticality"],
        allergy["code"]["coding"][0],
        allergy["reaction"],
        allergy["recordedDate"],
    ) == (
        ["medication"],
        "high",
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980", "display": "Penicillin G"},
        [{"manifestation": [{"text": "Hives"}]}],
        "2010-01-01",
    )
    (condition,) = _resources(journey_bundle, "Condition")
    assert (
        condition["code"]["coding"][0]["system"],
        condition["code"]["coding"][0]["code"],
        condition["encounter"],
    ) == ("http://hl7.org/fhir/sid/icd-10", "R07.9", {"reference": "Encounter/2"})
    (procedure,) = _resources(journey_bundle, "Procedure")
    assert (procedure["status"], procedure["code"]["coding"][0]["code"], procedure["performedDateTime"]) == (
        "completed",
        "93000",
        "2024-03-20T07:30:00+00:00",
    )
    (coverage,) = _resources(journey_bundle, "Coverage")
    assert {
        key: coverage[key]
        for key in ("status", "identifier", "subscriberId", "beneficiary", "period", "payor")
    } == {
        "status": "active",
        "identifier": [{"value": "POL-778899"}],
        "subscriberId": "MBR-0001",
        "beneficiary": {"reference": "Patient/1"},
        "period": {"start": "2024-01-01", "end": "2024-12-31"},
        "payor": [{"display": "Acme Health Insurance", "identifier": {"value": "PAYER77"}}],
    }
    assert coverage["relationship"]["coding"][0]["code"] == "self"
    assert [(c["type"]["coding"][0]["code"], c["value"], c["name"]) for c in coverage["class"]] == [
        ("group", "GRP-4455", "Acme Employees"),
        ("plan", "GOLD", "Gold PPO"),
    ]


def test_journey_appointment(journey_bundle):
    """The rescheduled appointment: booked, new time, service and participants."""
    (appointment,) = _resources(journey_bundle, "Appointment")
    assert {key: appointment[key] for key in ("status", "identifier", "start", "end", "minutesDuration")} == {
        "status": "booked",
        "identifier": [
            {"system": "urn:hl7engine:id:NORTHPMS", "value": "APT-7001", "type": _V2_0203("FILL")},
            {"system": "urn:hl7engine:id:NORTHPMS", "value": "PL-7001", "type": _V2_0203("PLAC")},
        ],
        "start": "2024-03-18T13:00:00+00:00",
        "end": "2024-03-18T13:45:00+00:00",
        "minutesDuration": 45,
    }
    assert appointment["serviceType"][0]["coding"][0] == {
        "system": "http://www.ama-assn.org/go/cpt",
        "code": "99214",
        "display": "Office visit, established, moderate",
    }
    assert appointment["participant"] == [
        {"actor": {"reference": "Patient/1"}, "status": "accepted"},
        {"actor": {"display": "DR MARCUS WELBY"}, "status": "accepted", "type": [{"text": "Attending"}]},
    ]


def test_journey_orders_reports_and_observations(journey_bundle):
    """Corrected lipids: report, cholesterol corrected; triglycerides cancelled; HDL a > quantity; a PDF."""
    requests = _resources(journey_bundle, "ServiceRequest")
    reports = _resources(journey_bundle, "DiagnosticReport")
    observations = {o["id"]: o for o in _resources(journey_bundle, "Observation")}
    assert [
        (r["status"], r["intent"], [(i["system"], i["value"]) for i in r["identifier"]]) for r in requests
    ] == [
        (
            "completed",
            "order",
            [("urn:hl7engine:id:STMARY_EMR", "ORD-3001"), ("urn:hl7engine:id:CITYLAB", "LAB-5501")],
        ),
        (
            "completed",
            "order",
            [("urn:hl7engine:id:STMARY_EMR", "ORD-3002"), ("urn:hl7engine:id:CITYLAB", "LAB-5502")],
        ),
    ]
    lipids, urine = reports
    assert (
        lipids["status"],
        lipids["issued"],
        lipids["basedOn"],
        [r["reference"] for r in lipids["result"]],
    ) == (
        "corrected",
        "2024-03-20T14:25:00+00:00",
        [{"reference": "ServiceRequest/1"}],
        [f"Observation/{n}" for n in (1, 2, 3, 4, 5)],
    )
    assert lipids["presentedForm"] == [
        {"contentType": "application/pdf", "data": "JVBERi0xLjQKJcfs", "title": "Laboratory report"}
    ]
    assert urine["status"] == "final"
    cholesterol = observations["1"]
    assert {
        key: cholesterol[key]
        for key in (
            "status",
            "valueQuantity",
            "referenceRange",
            "interpretation",
            "note",
            "performer",
            "effectiveDateTime",
        )
    } == {
        "status": "corrected",
        "valueQuantity": {"value": 198.0, "unit": "mg/dL"},
        "referenceRange": [{"text": "<200"}],
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "N",
                    }
                ]
            }
        ],
        "note": [{"text": "Corrected: calibration error"}],
        "performer": [{"display": "CityLab Central"}],
        "effectiveDateTime": "2024-03-20T08:00:00+00:00",
    }
    assert cholesterol["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "2093-3",
        "display": "Cholesterol",
    }
    assert observations["2"]["status"] == "cancelled"
    assert observations["3"]["valueQuantity"] == {"value": 60.0, "unit": "mg/dL", "comparator": ">"}
    assert (observations["4"]["status"], observations["4"]["valueQuantity"]) == (
        "final",
        {"value": 118.0, "unit": "mg/dL"},
    )
    assert observations["5"]["valueString"] == "Sample slightly lipemic.\nResult verified."
    assert observations["7"]["valueCodeableConcept"] == {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": "YEL", "display": "Yellow"}
        ],
        "text": "Yellow",
    }
    assert (observations["9"]["valueDateTime"], observations["10"]["valueDateTime"]) == (
        "2024-03-01",
        "2024-03-20T09:30:00+01:00",
    )


def test_journey_charge_items(journey_bundle):
    """Each FT1 is a ChargeItem on the PMS encounter, its type a v2-0017 coding, with its amount."""
    charges = _resources(journey_bundle, "ChargeItem")
    assert [
        (c["identifier"][0]["value"], c["context"], c["code"]["coding"][-1]["code"], c["priceOverride"])
        for c in charges
    ] == [
        ("TX-0001", {"reference": "Encounter/1"}, "CG", {"value": 150.0, "currency": "USD"}),
        ("TX-0002", {"reference": "Encounter/1"}, "PY", {"value": -25.0, "currency": "USD"}),
        ("TX-0003", {"reference": "Encounter/1"}, "AJ", {"value": -40.5, "currency": "USD"}),
    ]
    assert (
        charges[0]["status"],
        charges[0]["quantity"],
        charges[0]["occurrenceDateTime"],
        charges[0]["reason"][0]["coding"][0]["code"],
    ) == ("billed", {"value": 1.0}, "2024-03-18T13:00:00+00:00", "R07.9")


def test_merged_away_patient_points_to_the_survivor(feed):
    """The duplicate's own Bundle says it is inactive and replaced by patient 1."""
    for name in JOURNEY:
        feed(name)
    bundle = everything(feed.engine, 2, base_url=BASE)
    validate(bundle)
    (patient,) = _resources(bundle, "Patient")
    assert (patient["active"], patient["link"]) == (
        False,
        [{"other": {"reference": "Patient/1"}, "type": "replaced-by"}],
    )


@pytest.mark.parametrize(
    ("statuses", "report"),
    [
        (("F", "F"), "final"),
        (("C",), "corrected"),
        (("F", "C", "X"), "corrected"),
        (("F", "P"), "preliminary"),
        (("C", "P"), "preliminary"),
        (("X", "X"), "cancelled"),
        (("F", "D"), "final"),
    ],
)
def test_report_status_without_obr_25_comes_from_its_results(feed, statuses, report):
    """No OBR-25: all final is final, any corrected corrected, any preliminary preliminary; still valid R4."""
    obx = [f"OBX|{n}|NM|C{n}^Code {n}^L||{n}|mg|||||{status}" for n, status in enumerate(statuses, start=1)]
    feed(hl7("ORU^R01", "20240101080000", PID, "OBR|1|P-9^EMR|F-9|PANEL^Panel^L", *obx, sender="LAB"))
    bundle = everything(feed.engine, 1, base_url=BASE)
    validate(bundle)
    (found,) = _resources(bundle, "DiagnosticReport")
    assert found["status"] == report


def test_identifiers_never_repeat_a_value_without_a_system(feed):
    """SCH-1 and SCH-2 of one value and namespace are one identifier; its system is the namespace (or OID)."""
    sch = "SCH|APT-1^CLINIC|APT-1^CLINIC||||||||30|min|^^30^20240110090000"
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", sch, PID))
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", "SCH|A-2^1.2.840.99|A-2|||||||30|min", PID))
    bundle = everything(feed.engine, 1, base_url=BASE)
    validate(bundle)
    appointments = _resources(bundle, "Appointment")
    assert [[(i["system"], i["value"]) for i in a["identifier"]] for a in appointments] == [
        [("urn:hl7engine:id:CLINIC", "APT-1")],
        [("urn:hl7engine:id:PMS", "A-2"), ("urn:oid:1.2.840.99", "A-2")],
    ]


def test_unknown_patient_has_no_bundle(engine):
    """everything() answers None for an id the record does not have."""
    assert everything(engine, 404) is None


def test_every_corpus_patient_exports_valid_r4(engine, ingestor):
    """After the whole corpus, the Bundle of every patient in the record passes the R4 models."""
    patients = set()
    for _, text in corpus_messages():
        result = ingestor.apply(
            store_message(engine, text.encode("utf-8", "surrogateescape")), Message.parse(text), RECEIVED
        )
        if result.patient_id is not None:
            patients.add(result.patient_id)
    assert len(patients) >= 30
    for patient_id in sorted(patients):
        validate(everything(engine, patient_id, base_url=BASE))
