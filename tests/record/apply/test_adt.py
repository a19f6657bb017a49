"""engine/record/apply/adt.py: registrations, the life of a visit, and merges of patients."""

from __future__ import annotations

from engine.record.query import get_patient
from tests.fakes.record import PID, PV1, hl7


def test_older_message_never_overwrites_newer_data(feed):
    """An A08 older than the one applied leaves name and history; a late A02 leaves the discharged visit."""
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PID, PV1))
    feed(hl7("ADT^A08^ADT_A01", "20240105080000", PID.replace("DOE^JANE^Q", "DOE-SMITH^JANE^Q"), PV1))
    feed(
        hl7(
            "ADT^A03^ADT_A03",
            "20240106080000",
            PID.replace("DOE^JANE^Q", "DOE-SMITH^JANE^Q"),
            PV1.replace("|I|W1^101^A^HOSP|", "|I|W2^202^B^HOSP|"),
        )
    )
    _, late = feed(
        hl7(
            "ADT^A02^ADT_A02",
            "20240103080000",
            PID.replace("DOE^JANE^Q", "ROE^JANE^Q"),
            PV1.replace("W1^101^A", "W9^909^Z"),
        )
    )
    patient = get_patient(feed.engine, 1)
    assert (
        late.detail == "patient 1; demographics kept: the message is older than the record;"
        " visit 1 kept: the message is older than the record"
    )
    assert [n["family"] for n in patient["names"]] == ["DOE-SMITH"]
    (visit,) = patient["visits"]
    assert (visit["status"], visit["point_of_care"], visit["discharged_at"]) == (
        "finished",
        "W2",
        "2024-01-06T08:00:00+00:00",
    )


def test_out_of_order_discharge_before_admit(feed):
    """An A03 that overtakes its A01 creates the finished visit; the older A01 then changes nothing."""
    feed(hl7("ADT^A03^ADT_A03", "20240106080000", PID, PV1))
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PID, PV1.replace("W1^101^A", "W0^100^A")))
    (visit,) = get_patient(feed.engine, 1)["visits"]
    assert (visit["status"], visit["point_of_care"], visit["discharged_at"]) == (
        "finished",
        "W1",
        "2024-01-06T08:00:00+00:00",
    )


def test_visit_lifecycle_transfer_discharge_and_cancels(feed):
    """A01 admits, A02 moves (prior location kept), A12 undoes it, A03 ends it, A13 reopens, A11 cancels."""
    states = []
    steps = [
        ("ADT^A01^ADT_A01", PV1),
        ("ADT^A02^ADT_A02", PV1.replace("W1^101^A", "W2^202^B")),
        ("ADT^A12^ADT_A12", PV1),
        ("ADT^A03^ADT_A03", PV1),
        ("ADT^A13^ADT_A01", PV1),
        ("ADT^A11^ADT_A09", PV1),
    ]
    for hour, (event, pv1) in enumerate(steps, start=1):
        feed(hl7(event, f"202401010{hour}00", PID, pv1))
        (visit,) = get_patient(feed.engine, 1)["visits"]
        states.append(
            (visit["status"], visit["point_of_care"], visit["prior_location"], visit["discharged_at"])
        )
    assert states == [
        ("in-progress", "W1", None, None),
        ("in-progress", "W2", "W1 101 A HOSP", None),
        ("in-progress", "W1", None, None),
        ("finished", "W1", None, "2024-01-01T04:00:00+00:00"),
        ("in-progress", "W1", None, None),
        ("cancelled", "W1", None, None),
    ]


def test_merge_of_unknown_prior_keeps_it_as_alias(feed):
    """An A34 with an unknown MRG-1 records the merge with no prior patient and the prior id as an alias."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, result = feed(hl7("ADT^A34^ADT_A30", "20240102080000", PID, "MRG|OLD-7^^^PMS^PI"))
    assert result.detail == "patient 1; merge 1: prior identifiers kept as aliases"
    patient = get_patient(feed.engine, 1)
    assert [(i["value"], i["alias"]) for i in patient["identifiers"]] == [("P-1", False), ("OLD-7", True)]
    assert patient["merges"][0]["prior_id"] is None


# A visit without PV1-19: outpatient class O in clinic C1, with or without an admit time (PV1-44).
UNNUMBERED = "PV1|1|O|C1^R1^^CLINIC"
ADMITTED = UNNUMBERED + "|" * 41 + "20240101080000"


def test_a_registration_sent_again_without_visit_number_finds_its_visit(feed):
    """A04/A01 without PV1-19 sent again match the visit of the same class and admit time, not a new one."""
    for time in ("20240101080000", "20240101080000", "20240101083000"):
        feed(hl7("ADT^A04^ADT_A01", time, PID, ADMITTED))
    feed(hl7("ADT^A01^ADT_A01", "20240101090000", PID, "PV1|1|I|W1^101^A^HOSP"))
    feed(hl7("ADT^A01^ADT_A01", "20240101090000", PID, "PV1|1|I|W1^101^A^HOSP"))
    feed(hl7("ADT^A04^ADT_A01", "20240101100000", PID, ADMITTED.replace("20240101080000", "20240101095000")))
    visits = get_patient(feed.engine, 1)["visits"]
    assert [(v["patient_class"], v["admitted_at"]) for v in visits] == [
        ("O", "2024-01-01T08:00:00+00:00"),
        ("I", "2024-01-01T09:00:00+00:00"),
        ("O", "2024-01-01T09:50:00+00:00"),
    ]


def test_a_registration_without_admit_time_finds_the_open_visit_of_its_place_and_day(feed):
    """Without PV1-19 and PV1-44: the open visit of the same class and location that day; else a new one."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID, UNNUMBERED))
    feed(hl7("ADT^A04^ADT_A01", "20240101120000", PID, UNNUMBERED))
    feed(hl7("ADT^A04^ADT_A01", "20240101130000", PID, UNNUMBERED.replace("C1^R1", "C2^R1")))
    feed(hl7("ADT^A04^ADT_A01", "20240102080000", PID, UNNUMBERED))
    feed(hl7("ADT^A03^ADT_A03", "20240102090000", PID, UNNUMBERED))
    feed(hl7("ADT^A04^ADT_A01", "20240102100000", PID, UNNUMBERED))
    visits = get_patient(feed.engine, 1)["visits"]
    assert [(v["id"], v["point_of_care"], v["status"]) for v in visits] == [
        (1, "C1", "in-progress"),
        (2, "C2", "in-progress"),
        (3, "C1", "finished"),
        (4, "C1", "in-progress"),
    ]
