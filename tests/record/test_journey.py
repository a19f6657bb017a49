"""The patient journey of docs/record.md across PMS, EMR, lab and payer identifiers, field by field."""

from __future__ import annotations

import sqlalchemy as sa

from engine.record import schema
from engine.record.query import get_patient
from tests.fakes.record import NOW, feed_journey

T_NOW = NOW.isoformat()


def _without(rows: list[dict], *keys: str) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in keys} for row in rows]


def test_each_message_applies_to_one_patient(feed):
    """Every journey message lands on patient 1 but the duplicate registration, flagged and later merged."""
    results = feed_journey(feed)
    assert [(r.event, r.patient_id, r.applied) for r in results] == [
        ("ADT^A04", 1, True),
        ("SIU^S12", 1, True),
        ("SIU^S13", 1, True),
        ("ADT^A01", 1, True),
        ("ORU^R01", 1, True),
        ("ORU^R01", 1, True),
        ("DFT^P03", 1, True),
        ("ADT^A04", 2, True),
        ("ADT^A40", 1, True),
    ]
    assert results[7].detail == "patient 2; identity conflict flagged (possible_duplicate)"
    assert results[8].detail == "patient 1; merge 1: patient 2 merged"


def test_identifiers_of_every_system_link_to_one_person(feed):
    """PMS id, EMR MRN (by the A01 carrying both), lab id (by the ORU), the merged duplicate as an alias."""
    feed_journey(feed)
    patient = get_patient(feed.engine, 1)
    assert _without(patient["identifiers"], "id", "linked_at") == [
        {
            "authority": "NORTHPMS",
            "value": "PMS-100234",
            "type_code": "PI",
            "source_system": "NORTHPMS",
            "alias": False,
            "link_reason": "registered by this message (message 1)",
            "message_id": 1,
        },
        {
            "authority": "STMARY_EMR",
            "value": "MRN-556677",
            "type_code": "MR",
            "source_system": "STMARY_EMR",
            "alias": False,
            "link_reason": "came with NORTHPMS identifier already linked to patient 1 (message 4)",
            "message_id": 4,
        },
        {
            "authority": "CITYLAB",
            "value": "L-9981",
            "type_code": "PI",
            "source_system": "CITYLAB",
            "alias": False,
            "link_reason": "came with STMARY_EMR identifier already linked to patient 1 (message 5)",
            "message_id": 5,
        },
        {
            "authority": "NORTHPMS",
            "value": "PMS-100299",
            "type_code": "PI",
            "source_system": "NORTHPMS",
            "alias": True,
            "link_reason": "registered by this message (identity conflict flagged) (message 8)",
            "message_id": 8,
        },
    ]


def test_demographics_are_the_newest_message_s(feed):
    """Name, address, phones, language, marital status, next of kin: as the newest PID (A40) and NK1 say."""
    feed_journey(feed)
    patient = get_patient(feed.engine, 1)
    assert {
        key: patient[key]
        for key in (
            "birth_date",
            "sex",
            "language",
            "marital_status",
            "deceased",
            "deceased_at",
            "merged_into",
            "as_of",
        )
    } == {
        "birth_date": "1980-05-17",
        "sex": "F",
        "language": "spa",
        "marital_status": "M",
        "deceased": None,
        "deceased_at": None,
        "merged_into": None,
        "as_of": "2024-03-25T11:00:00+00:00",
    }
    assert _without(patient["names"], "id") == [
        {
            "position": 1,
            "family": "GARCÍA",
            "given": "MARÍA",
            "middle": "ELENA",
            "prefix": None,
            "suffix": None,
            "name_type": "L",
            "message_id": 7,
        },
    ]
    assert _without(patient["addresses"], "id") == [
        {
            "position": 1,
            "line1": "12 Calle Mayor",
            "line2": "Apt 3",
            "city": "Springfield",
            "state": "IL",
            "postal_code": "62701",
            "country": "USA",
            "address_type": "H",
            "message_id": 1,
        },
    ]
    assert [(t["use"], t["value"], t["use_code"], t["equipment"]) for t in patient["telecoms"]] == [
        ("home", "+1 (217) 5550101", "PRN", "PH"),
        ("home", "maria.garcia@example.org", "NET", "Internet"),
        ("work", "+1 (217) 5550199", "WPN", "PH"),
    ]
    assert _without(patient["contacts"], "id") == [
        {
            "position": 1,
            "family": "GARCIA",
            "given": "JUAN",
            "relationship_code": "SPO",
            "relationship_text": "Spouse",
            "relationship_system": "HL70063",
            "phone": "+1 (217) 5550102",
            "message_id": 1,
        },
    ]


def test_visits_keep_their_system_numbers_and_states(feed):
    """The PMS outpatient visit, the EMR inpatient stay, and the duplicate's visit moved over by the merge."""
    feed_journey(feed)
    visits = get_patient(feed.engine, 1)["visits"]
    assert [
        (v["id"], v["visit_number"], v["status"], v["patient_class"], v["message_id"]) for v in visits
    ] == [
        (1, "V-PMS-5001", "in-progress", "O", 1),
        (2, "ENC-88001", "in-progress", "I", 4),
        (3, "V-PMS-5002", "in-progress", "O", 8),
    ]
    assert _without([visits[1]], "id") == [
        {
            "visit_number": "ENC-88001",
            "account_number": None,
            "merged_into_id": None,
            "status": "in-progress",
            "patient_class": "I",
            "point_of_care": "4N",
            "room": "402",
            "bed": "A",
            "facility": "STMARY",
            "prior_location": None,
            "attending_id": "5678",
            "attending_name": "DR GREGORY HOUSE",
            "referring_id": "1234",
            "referring_name": "DR MARCUS WELBY",
            "hospital_service": "CAR",
            "admit_reason": "Chest pain, unspecified",
            "discharge_disposition": None,
            "admitted_at": "2024-03-20T07:10:00+00:00",
            "discharged_at": None,
            "as_of": "2024-03-20T07:10:00+00:00",
            "message_id": 4,
        }
    ]


def test_clinical_facts_and_coverage(feed):
    """AL1, DG1 and PR1 of the A01 (diagnosis and procedure on its visit) and IN1/IN2 of the A04."""
    feed_journey(feed)
    patient = get_patient(feed.engine, 1)
    assert _without(patient["allergies"], "id") == [
        {
            "code": "7980",
            "text": "Penicillin G",
            "system": "RXNORM",
            "allergy_type": "DA",
            "severity": "SV",
            "reaction": "Hives",
            "identified_date": "2010-01-01",
            "as_of": "2024-03-20T07:10:00+00:00",
            "message_id": 4,
        }
    ]
    assert _without(patient["diagnoses"], "id") == [
        {
            "visit_id": 2,
            "code": "R07.9",
            "text": "Chest pain, unspecified",
            "system": "I10",
            "diagnosis_type": "A",
            "diagnosed_at": "2024-03-20T07:10:00+00:00",
            "as_of": "2024-03-20T07:10:00+00:00",
            "message_id": 4,
        }
    ]
    assert _without(patient["procedures"], "id") == [
        {
            "visit_id": 2,
            "code": "93000",
            "text": "Electrocardiogram",
            "system": "CPT",
            "performed_at": "2024-03-20T07:30:00+00:00",
            "as_of": "2024-03-20T07:10:00+00:00",
            "message_id": 4,
        }
    ]
    assert _without(patient["coverages"], "id") == [
        {
            "plan_id": "GOLD",
            "plan_name": "Gold PPO",
            "company_id": "PAYER77",
            "company_name": "Acme Health Insurance",
            "group_number": "GRP-4455",
            "group_name": "Acme Employees",
            "policy_number": "POL-778899",
            "member_number": "MBR-0001",
            "insured_name": "MARIA GARCIA",
            "relationship": "SEL",
            "effective_date": "2024-01-01",
            "expiration_date": "2024-12-31",
            "medicare_number": "1EG4TE5MK72",
            "medicaid_number": None,
            "as_of": "2024-03-01T08:00:00+00:00",
            "message_id": 1,
        }
    ]


def test_appointment_is_the_rescheduled_one(feed):
    """S12 booked APT-7001; S13 moved it to 18 March 14:00+01:00 for 45 minutes and replaced its resources."""
    feed_journey(feed)
    (appointment,) = get_patient(feed.engine, 1)["appointments"]
    resources = appointment.pop("resources")
    assert _without([appointment], "id") == [
        {
            "visit_id": None,
            "placer_id": "PL-7001",
            "placer_namespace": "NORTHPMS",
            "filler_id": "APT-7001",
            "filler_namespace": "NORTHPMS",
            "status": "Booked",
            "event": "S13",
            "start_at": "2024-03-18T13:00:00+00:00",
            "end_at": "2024-03-18T13:45:00+00:00",
            "duration_minutes": 45,
            "reason_code": "FU",
            "reason_text": "Follow-up after chest pain",
            "reason_system": "LOCAL",
            "type_code": "ROUTINE",
            "type_text": "Routine",
            "type_system": "HL70276",
            "as_of": "2024-03-05T13:30:00+00:00",
            "message_id": 3,
        }
    ]
    assert [
        (r["kind"], r["code"], r["text"], r["role"], r["start_at"], r["duration_minutes"]) for r in resources
    ] == [
        ("service", "99214", "Office visit, established, moderate", None, "2024-03-18T13:00:00+00:00", 45),
        ("personnel", "1234", "DR MARCUS WELBY", "Attending", "2024-03-18T13:00:00+00:00", 45),
    ]


def test_results_after_the_correction(feed):
    """C replaced cholesterol, X cancelled triglycerides, the final LDL the preliminary; all types kept."""
    feed_journey(feed)
    lipids, urine = get_patient(feed.engine, 1)["orders"]
    assert {
        key: lipids[key]
        for key in (
            "visit_id",
            "placer_number",
            "placer_namespace",
            "filler_number",
            "filler_namespace",
            "code",
            "text",
            "system",
            "order_control",
            "status",
            "observed_at",
            "reported_at",
            "ordering_provider_id",
            "ordering_provider_name",
            "notes",
            "message_id",
        )
    } == {
        "visit_id": 2,
        "placer_number": "ORD-3001",
        "placer_namespace": "STMARY_EMR",
        "filler_number": "LAB-5501",
        "filler_namespace": "CITYLAB",
        "code": "24331-1",
        "text": "Lipid panel",
        "system": "LN",
        "order_control": "RE",
        "status": "C",
        "observed_at": "2024-03-20T08:00:00+00:00",
        "reported_at": "2024-03-20T14:25:00+00:00",
        "ordering_provider_id": "5678",
        "ordering_provider_name": "DR GREGORY HOUSE",
        "notes": "Fasting sample",
        "message_id": 6,
    }
    values = [
        (
            o["code"],
            o["value_type"],
            o["value"],
            o["numeric_value"],
            o["units"],
            o["reference_range"],
            o["abnormal_flags"],
            o["status"],
            o["message_id"],
        )
        for o in lipids["observations"]
    ]
    assert values == [
        ("2093-3", "NM", "198", 198.0, "mg/dL", "<200", "N", "C", 6),
        ("2571-8", "NM", "150", 150.0, "mg/dL", "<150", "N", "X", 6),
        ("2085-9", "SN", ">60", 60.0, "mg/dL", ">40", "N", "F", 5),
        ("13457-7", "NM", "118", 118.0, "mg/dL", "<130", "N", "F", 6),
        ("8251-1", "TX", "Sample slightly lipemic.\nResult verified.", None, None, None, None, "F", 5),
        ("11502-2", "ED", "JVBERi0xLjQKJcfs", None, None, None, None, "F", 5),
    ]
    cholesterol, _, hdl, _, comment, report = lipids["observations"]
    assert (cholesterol["notes"], cholesterol["performing_lab"], cholesterol["observed_at"]) == (
        "Corrected: calibration error",
        "CityLab Central",
        "2024-03-20T08:00:00+00:00",
    )
    assert (hdl["comparator"], hdl["separator"], hdl["numeric_high"]) == (">", None, None)
    assert comment["notes"] == "Reviewed by the lab supervisor"
    assert (report["media_type"], report["encoding"]) == ("application/pdf", "Base64")
    assert [
        (o["value_type"], o["value"], o["coded_code"], o["coded_text"], o["coded_system"])
        for o in urine["observations"]
    ] == [
        ("CWE", "Yellow", "YEL", "Yellow", "HL70078"),
        ("CE", "Clear", "CLR", "Clear", "LOCAL"),
        ("DT", "2024-03-01", None, None, None),
        ("TS", "2024-03-20T09:30:00+01:00", None, None, None),
    ]


def test_transactions_are_linked_to_the_pms_visit(feed):
    """DFT P03: a charge, a payment and an adjustment on visit V-PMS-5001."""
    feed_journey(feed)
    transactions = get_patient(feed.engine, 1)["transactions"]
    assert [
        (
            t["visit_id"],
            t["transaction_id"],
            t["transaction_type"],
            t["code"],
            t["quantity"],
            t["amount"],
            t["currency"],
        )
        for t in transactions
    ] == [
        (1, "TX-0001", "CG", "99214", "1", "150", "USD"),
        (1, "TX-0002", "PY", "COPAY", "1", "-25", "USD"),
        (1, "TX-0003", "AJ", "CONTRACT", "1", "-40.5", "USD"),
    ]
    assert _without([transactions[0]], "id") == [
        {
            "visit_id": 1,
            "transaction_id": "TX-0001",
            "batch_id": "B-0322",
            "transaction_type": "CG",
            "transaction_at": "2024-03-18T13:00:00+00:00",
            "posted_at": "2024-03-22T09:00:00+00:00",
            "code": "99214",
            "text": "Office visit, established, moderate",
            "system": "CPT",
            "quantity": "1",
            "amount": "150",
            "unit_amount": "150",
            "currency": "USD",
            "department": "Cardiology",
            "procedure_code": "99214",
            "procedure_text": "Office visit, established, moderate",
            "procedure_system": "CPT",
            "diagnoses": [{"code": "R07.9", "text": "Chest pain, unspecified", "system": "I10"}],
            "performed_by": "DR MARCUS WELBY",
            "ordered_by": "DR MARCUS WELBY",
            "as_of": "2024-03-22T09:00:00+00:00",
            "message_id": 7,
        }
    ]


def test_duplicate_is_flagged_then_merged_and_resolved(feed):
    """The duplicate registration is flagged (the rule does not link it); the A40 merges it, resolving it."""
    feed_journey(feed)
    patient = get_patient(feed.engine, 1)
    assert _without(patient["merges"], "merged_at") == [
        {
            "id": 1,
            "survivor_id": 1,
            "prior_id": 2,
            "prior_identifiers": [["NORTHPMS", "PMS-100299"]],
            "event": "A40",
            "moved": {"record_identifiers": [4], "record_visits": [3], "created_identifiers": []},
            "unmerged_at": None,
            "unmerge_reason": None,
            "kind": "merge",
            "reason": "ADT^A40 from NORTHPMS (message 9)",
            "source_system": "NORTHPMS",
            "message_id": 9,
        }
    ]
    assert _without(patient["conflicts"], "detail") == [
        {
            "id": 1,
            "kind": "possible_duplicate",
            "patient_id": 2,
            "other_patient_id": 1,
            "authority": None,
            "value": None,
            "created_at": T_NOW,
            "resolved_at": T_NOW,
            "resolution": "merged by merge 1",
            "message_id": 8,
        }
    ]
    prior = get_patient(feed.engine, 2)
    assert (prior["merged_into"], prior["identifiers"], prior["visits"]) == (1, [], [])


def test_history_keeps_every_previous_value(feed):
    """The EMR's new phone, the lab's unaccented name and the correction each left the previous value."""
    feed_journey(feed)
    h = schema.history
    with feed.engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                h.c.entity, h.c.entity_id, h.c.field, h.c.old_value, h.c.new_value, h.c.cause, h.c.message_id
            )
            .where(h.c.entity == "record_observations", h.c.entity_id == 1)
            .order_by(h.c.id)
        ).all()
        fields = connection.execute(
            sa.select(h.c.field, h.c.cause, h.c.message_id)
            .where(h.c.entity == "record_patients", h.c.entity_id == 1)
            .order_by(h.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("record_observations", 1, "value", "212", "198", "ORU^R01", 6),
        ("record_observations", 1, "numeric_value", "212.0", "198.0", "ORU^R01", 6),
        ("record_observations", 1, "abnormal_flags", "H", "N", "ORU^R01", 6),
        ("record_observations", 1, "status", "F", "C", "ORU^R01", 6),
        ("record_observations", 1, "notes", None, "Corrected: calibration error", "ORU^R01", 6),
        ("record_observations", 1, "message_id", "5", "6", "ORU^R01", 6),
    ]
    assert [tuple(row) for row in fields] == [
        ("names", "ADT^A01", 4),
        ("telecoms", "ADT^A01", 4),
        ("names", "DFT^P03", 7),
        ("telecoms", "DFT^P03", 7),
    ]
