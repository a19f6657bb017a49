"""engine/record/values.py: segments read into row values, KEEP for what is absent, None for what is null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from engine.hl7.message import Message
from engine.record import values as values_module
from engine.record.extract import KEEP, SegmentReader
from engine.record.values import (
    appointment_values,
    coded_key,
    contact_values,
    coverage_values,
    described,
    observation_values,
    pid_values,
    resource_rows,
    rule_demographics,
    transaction_values,
    visit_status,
    visit_values,
)

MSH = "MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101080000||ADT^A08|1|P|2.5.1"
EST = timezone(timedelta(hours=-5))


def read(*segments: str) -> list[SegmentReader]:
    """Each segment after an MSH, as the record reads it."""
    message = Message.parse("\r".join([MSH, *segments]) + "\r")
    return [SegmentReader(segment, message) for segment in message.segments[1:]]


def one(text: str) -> SegmentReader:
    (reader,) = read(text)
    return reader


def segment(name: str, fields: dict[int, str]) -> str:
    """The text of a ``name`` segment with these fields by number, the others empty."""
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))])


# -- the patient ----------------------------------------------------------------------------------


def test_pid_columns_keep_what_is_absent_and_clear_what_is_null():
    """An absent PID field gives KEEP, the HL7 null None; dates keep their precision, sex is upper-cased."""
    pid = segment(
        "PID",
        {
            3: "P-1",
            5: "DOE^JANE",
            7: "1970",
            8: "f",
            16: '""',
            19: "123-45-6789",
            29: "20240102103000",
            30: "Y",
        },
    )
    values, _ = pid_values(one(pid), EST)
    assert values == {
        "birth_date": "1970",
        "sex": "F",
        "language": KEEP,
        "marital_status": None,
        "ssn": "123-45-6789",
        "deceased_at": datetime(2024, 1, 2, 10, 30, tzinfo=EST),
        "deceased": True,
    }
    unreadable, _ = pid_values(one("PID|1||P-1||DOE^JANE||19701399|M|||||||^^^Spanish"), UTC)
    assert (unreadable["birth_date"], unreadable["language"]) == (KEEP, "Spanish")


def test_a_pid_read_again_gives_the_same_values_by_its_text_delimiters_and_timezone(monkeypatch):
    """The same PID text gives what it gave, changes to it not kept; other delimiters or zone read anew."""
    pid = "PID|1||P-1||DOE^JANE||1970|F|||||||||||||||||||||20240102103000|Y"
    first, lists = pid_values(one(pid), EST)
    first["sex"], lists["record_names"] = "M", KEEP
    again, lists = pid_values(one(pid), EST)
    assert (again["sex"], again["deceased_at"]) == ("F", datetime(2024, 1, 2, 10, 30, tzinfo=EST))
    assert lists["record_names"][0]["family"] == "DOE"
    assert pid_values(one(pid), UTC)[0]["deceased_at"] == datetime(2024, 1, 2, 10, 30, tzinfo=UTC)
    # The same text under other delimiters: "^" no longer splits the name.
    other = Message.parse(MSH.replace("^~", "#~", 1) + "\r" + pid + "\r")
    names = pid_values(SegmentReader(other.segments[1], other), EST)[1]["record_names"]
    assert [(name["family"], name["given"]) for name in names] == [("DOE^JANE", None)]
    monkeypatch.setattr(values_module.PIDS, "limit", 1)  # forgotten when full: read again, the same
    assert pid_values(one(pid.replace("DOE", "ROE")), EST)[1]["record_names"][0]["family"] == "ROE"
    assert pid_values(one(pid), EST)[0] == again


def test_pid_lists_are_kept_when_absent_and_emptied_when_null():
    """Names, addresses and telecoms are KEEP when their fields are absent, [] when null, else rows."""
    _, absent = pid_values(one("PID|1||P-1"), UTC)
    assert absent == {"record_names": KEEP, "record_addresses": KEEP, "record_telecoms": KEEP}
    _, null = pid_values(one('PID|1||P-1||""||||||""||""|""'), UTC)
    assert null == {"record_names": [], "record_addresses": [], "record_telecoms": []}
    _, lists = pid_values(
        one(
            segment(
                "PID",
                {
                    3: "P-1",
                    5: "Ó'Neil^Ann^B^^Dr^^L~^^^^^^A",
                    11: "1 Main^Flat 2^Town^ST^111^US^H",
                    13: "^PRN^PH^^1^555^1234567~x@y.org",
                    14: "^WPN^PH^^^^7654321^99",
                },
            )
        ),
        UTC,
    )
    assert lists["record_names"] == [
        {
            "family": "Ó'Neil",
            "given": "Ann",
            "middle": "B",
            "suffix": None,
            "prefix": "Dr",
            "name_type": "L",
            "family_key": "oneil",
            "given_key": "ann",
        }
    ]
    assert lists["record_addresses"] == [
        {
            "line1": "1 Main",
            "line2": "Flat 2",
            "city": "Town",
            "state": "ST",
            "postal_code": "111",
            "country": "US",
            "address_type": "H",
        }
    ]
    assert lists["record_telecoms"] == [
        {"value": "+1 (555) 1234567", "use_code": "PRN", "equipment": "PH", "use": "home"},
        {"value": "x@y.org", "use_code": None, "equipment": None, "use": "home"},
        {"value": "7654321 x99", "use_code": "WPN", "equipment": "PH", "use": "work"},
    ]


def test_the_rule_compares_the_first_name_normalised():
    """rule_demographics takes the first name's family and given, normalised; '' for what is missing."""
    values, lists = pid_values(one("PID|1||P-1||García-López^María~OTHER^NAME||19800517"), UTC)
    assert rule_demographics(values, lists) == {
        "family": "garcialopez",
        "given": "maria",
        "birth_date": "1980-05-17",
        "sex": "",
    }


def test_a_contact_is_its_name_relationship_and_first_phone():
    """An NK1 gives family, given, relationship (None when absent) and the first phone, formatted."""
    assert contact_values(
        one("NK1|1|DOE^JOHN|SPO^Spouse^HL70063||^PRN^PH^^44^20^7946000~^NET^Internet^j@d.org")
    ) == {
        "family": "DOE",
        "given": "JOHN",
        "relationship_code": "SPO",
        "relationship_text": "Spouse",
        "relationship_system": "HL70063",
        "phone": "+44 (20) 7946000",
    }
    assert contact_values(one("NK1|1|DOE^JOHN"))["relationship_code"] is None


# -- visits ---------------------------------------------------------------------------------------


def test_visit_columns_from_pv1_and_pv2():
    """PV1 gives class, location, doctors, times, number and prior location; PV2-3 the admit reason.

    The account is the PID's (PID-18), when it is given.
    """
    pv1, pv2 = read(
        segment(
            "PV1",
            {
                2: "I",
                3: "W1^101^A^HOSP",
                6: "W0^100^B^HOSP",
                7: "1234^SMITH^ANN^^^DR",
                10: "MED",
                19: "V-9",
                36: "DIS",
                44: "20240101080000",
            },
        ),
        "PV2|||^Chest pain",
    )
    values = visit_values(pv1, pv2, UTC)
    assert values == {
        "visit_number": "V-9",
        "patient_class": "I",
        "point_of_care": "W1",
        "room": "101",
        "bed": "A",
        "facility": "HOSP",
        "hospital_service": "MED",
        "discharge_disposition": "DIS",
        "admitted_at": datetime(2024, 1, 1, 8, tzinfo=UTC),
        "discharged_at": KEEP,
        "prior_location": "W0 100 B HOSP",
        "attending_id": "1234",
        "attending_name": "DR ANN SMITH",
        "referring_id": KEEP,
        "referring_name": KEEP,
        "admit_reason": "Chest pain",
        "account_number": KEEP,
    }
    assert (
        visit_values(pv1, pv2, UTC, pid=one("PID|1||P-1|||||||||||||||ACC-7^^^HOSP"))["account_number"]
        == "ACC-7"
    )
    assert visit_status(values) == "in-progress"
    assert visit_status({**values, "discharged_at": datetime(2024, 1, 2, tzinfo=UTC)}) == "finished"
    assert visit_status({"admitted_at": KEEP}) == "unknown"
    assert visit_values(one('PV1|1|O||||""'), None, UTC)["prior_location"] is None


# -- clinical lists and coverage ------------------------------------------------------------------


def test_a_fact_is_keyed_by_its_code_else_its_text():
    """coded_key uses the code when there is one, else the text; DG1/PR1 text falls back to field 4."""
    assert coded_key({"code": "I10", "text": "Hypertension"}, patient_id=1) == {
        "patient_id": 1,
        "code": "I10",
    }
    diagnosis = described(one("DG1|1||^^^^^|High blood pressure"))
    assert diagnosis == {"code": None, "text": "High blood pressure", "system": None}
    assert coded_key(diagnosis, patient_id=1) == {
        "patient_id": 1,
        "code": None,
        "text": "High blood pressure",
    }


def test_coverage_columns_from_in1_and_in2():
    """IN1 gives plan, company, group, dates, insured, numbers (member: IN1-49, else IN1-36); IN2 adds two."""
    in1, in2 = read(
        segment(
            "IN1",
            {
                2: "GOLD^Gold plan",
                3: "C-1",
                4: "ACME",
                8: "G-7",
                9: "Group A",
                12: "20240101",
                13: "20241231",
                16: "ROE^ANN",
                17: "SPO",
                36: "POL-5",
            },
        ),
        "IN2||||||MC-1||MD-2",
    )
    values = coverage_values(in1, in2)
    assert {key: values[key] for key in ("plan_id", "company_name", "effective_date", "insured_name")} == {
        "plan_id": "GOLD",
        "company_name": "ACME",
        "effective_date": "2024-01-01",
        "insured_name": "ANN ROE",
    }
    assert (values["policy_number"], values["member_number"]) == ("POL-5", "POL-5")
    assert (values["medicare_number"], values["medicaid_number"]) == ("MC-1", "MD-2")


# -- observations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obx", "expected"),
    [
        ("OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|3.9-5.5|H~A|||F", {"value": "5.4", "numeric_value": 5.4}),
        (
            "OBX|1|SN|HDL^HDL^L||>^1.5|mmol/L",
            {"value": ">1.5", "comparator": ">", "numeric_value": 1.5, "numeric_high": None},
        ),
        ("OBX|1|SN|R^Ratio^L||^1^:^2", {"value": "1:2", "separator": ":", "numeric_high": 2.0}),
        (
            "OBX|1|CWE|ORG^Organism^L||E.coli^Escherichia coli^SCT",
            {"value": "Escherichia coli", "coded_code": "E.coli", "coded_system": "SCT"},
        ),
        (
            "OBX|1|ED|PDF^Report^L||LAB^Application^PDF^Base64^JVBERi0=",
            {"media_type": "application/pdf", "encoding": "Base64", "value": "JVBERi0="},
        ),
        ("OBX|1|DT|D^Date^L||20240102", {"value": "2024-01-02"}),
        ("OBX|1|TS|T^Time^L||202401020300+0100", {"value": "2024-01-02T03:00:00+01:00"}),
        ("OBX|1|TX|N^Note^L||line one~line two", {"value": "line one\nline two"}),
        ("OBX|1|NM|GLU^Glucose^L||", {"value": None, "numeric_value": None}),
    ],
)
def test_an_observation_value_is_read_by_its_type(obx, expected):
    """OBX-5 is read as OBX-2 says: numbers, structured numbers, codes, encapsulated data, times, text."""
    values = observation_values(one(obx), UTC)
    assert {key: values[key] for key in expected} == expected


def test_observation_columns_around_the_value():
    """Code, sub-id, units, range, abnormal flags joined, status, observation time and the performing lab."""
    values = observation_values(
        one("OBX|1|NM|GLU^Glucose^L|2|5.4|^mmol/L|3.9-5.5|H~A|||f|||20240101093000|LAB^City lab"), UTC
    )
    assert {
        key: values[key]
        for key in ("code", "sub_id", "units", "reference_range", "abnormal_flags", "status", "observed_at")
    } == {
        "code": "GLU",
        "sub_id": "2",
        "units": "mmol/L",
        "reference_range": "3.9-5.5",
        "abnormal_flags": "H~A",
        "status": "F",
        "observed_at": datetime(2024, 1, 1, 9, 30, tzinfo=UTC),
    }
    assert values["performing_lab"] == "City lab"


# -- appointments ---------------------------------------------------------------------------------


def test_an_appointment_takes_its_times_from_tq1_else_sch_11_and_its_end_from_the_duration():
    """TQ1-7 starts it; without TQ1, SCH-11.4; the end is start plus SCH-9 in SCH-10's units (hours here)."""
    sch, tq1 = read(
        segment(
            "SCH",
            {1: "PL-1", 2: "FL-1", 7: "CHK^Checkup", 8: "FU", 9: "2", 10: "HOUR", 11: "^^^20240110090000"},
        ),
        "TQ1|||||||20240110100000",
    )
    with_tq1 = appointment_values(sch, tq1, [], UTC)
    assert (with_tq1["start_at"], with_tq1["end_at"], with_tq1["duration_minutes"]) == (
        datetime(2024, 1, 10, 10, tzinfo=UTC),
        datetime(2024, 1, 10, 12, tzinfo=UTC),
        120,
    )
    assert (with_tq1["reason_text"], with_tq1["type_code"], with_tq1["status"]) == (
        "Checkup",
        "FU",
        KEEP,
    )
    without = appointment_values(sch, None, [], UTC)
    assert without["start_at"] == datetime(2024, 1, 10, 9, tzinfo=UTC)


def test_resources_fill_a_missing_start_and_duration_and_become_rows():
    """A resource's start and duration stand in for the SCH's; each resource is a row of its kind."""
    sch, *resources = read(
        "SCH|PL-1|FL-1",
        "AIS|1||CONS^Consultation^L|20240110090000|||30|min",
        "AIG|1||R-1^Room 1|ROOM^Room",
        "AIL|1||W1^101^^HOSP",
        "AIP|1||1234^SMITH^ANN|MD^Physician",
    )
    values = appointment_values(sch, None, resources, UTC)
    assert (values["start_at"], values["end_at"], values["duration_minutes"]) == (
        datetime(2024, 1, 10, 9, tzinfo=UTC),
        datetime(2024, 1, 10, 9, 30, tzinfo=UTC),
        30,
    )
    rows = resource_rows(resources, UTC)
    assert [(row["kind"], row["code"], row["text"], row["role"]) for row in rows] == [
        ("service", "CONS", "Consultation", None),
        ("resource", "R-1", "Room 1", "Room"),
        ("location", "W1", "W1 101 HOSP", None),
        ("personnel", "1234", "ANN SMITH", "Physician"),
    ]
    assert (rows[0]["start_at"], rows[0]["duration_minutes"]) == (datetime(2024, 1, 10, 9, tzinfo=UTC), 30)


# -- transactions ---------------------------------------------------------------------------------


def test_a_transaction_is_read_with_its_amounts_codes_and_people():
    """FT1 gives id, type, times, code, decimal amounts and currency, diagnoses, procedure and who did it."""
    ft1 = one(
        segment(
            "FT1",
            {
                2: "T-1",
                3: "B-1",
                4: "20240105",
                5: "20240106",
                6: "CG",
                7: "99213^Office visit^CPT",
                10: "1",
                11: "125.50&USD",
                19: "I10^Hypertension^I10~E11^Diabetes^I10",
                20: "1234^SMITH^ANN",
                25: "99213^Office visit^CPT",
            },
        )
    )
    values = transaction_values(ft1, UTC, patient_id=1, visit_id=None)
    assert {
        key: values[key]
        for key in (
            "transaction_id",
            "batch_id",
            "transaction_type",
            "code",
            "quantity",
            "amount",
            "currency",
        )
    } == {
        "transaction_id": "T-1",
        "batch_id": "B-1",
        "transaction_type": "CG",
        "code": "99213",
        "quantity": Decimal("1"),
        "amount": Decimal("125.50"),
        "currency": "USD",
    }
    assert values["diagnoses"] == [
        {"code": "I10", "text": "Hypertension", "system": "I10"},
        {"code": "E11", "text": "Diabetes", "system": "I10"},
    ]
    assert (values["performed_by"], values["procedure_code"], values["patient_id"]) == (
        "ANN SMITH",
        "99213",
        1,
    )
    assert values["transaction_at"] == datetime(2024, 1, 5, tzinfo=UTC)
