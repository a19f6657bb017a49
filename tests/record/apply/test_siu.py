"""engine/record/apply/siu.py: an appointment booked, rescheduled, cancelled, missed, and its resources."""

from __future__ import annotations

import pytest

from engine.record.query import get_patient
from tests.fakes.record import PID, history, hl7


@pytest.mark.parametrize(
    ("event", "status"), [("S14", "Booked"), ("S15", "Cancelled"), ("S17", "Deleted"), ("S26", "Noshow")]
)
def test_appointment_events_set_the_status(feed, event, status):
    """S14 keeps the booking's status, S15 cancels, S17 deletes, S26 records a no-show."""
    sch = "SCH|PL-1|FL-1|||||||30|min|^^30^20240110090000"
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", sch, PID))
    feed(hl7(f"SIU^{event}^SIU_S12", "20240102080000", sch, PID))
    (appointment,) = get_patient(feed.engine, 1)["appointments"]
    assert (
        appointment["status"],
        appointment["event"],
        appointment["start_at"],
        appointment["duration_minutes"],
    ) == (status, event, "2024-01-10T09:00:00+00:00", 30)


def _changes(engine, field: str) -> list[tuple]:
    """(appointment id, old value, new value) of each change of an appointment's ``field``, oldest first."""
    changes = history(engine, "record_appointments", "entity_id", "field", "old_value", "new_value")
    return [(entity_id, old, new) for entity_id, changed, old, new in changes if changed == field]


SCH = "SCH|PL-1||||||||30|min|^^30^20240110090000"
AIS = "AIS|1|A|99213^Office visit^CPT|20240110090000|||30|min"
AIL = "AIL|1|A|CLINIC^ROOM2|||20240110090000|||30|min"


def test_a_reschedule_moves_the_appointment_and_replaces_its_resources(feed, engine):
    """An S13 naming the booking by its placer id moves it, adds the filler id and replaces the resources."""
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", SCH, PID, AIS, AIL))
    moved_sch = "SCH|PL-1|FL-1|||||||45|min|^^45^20240111100000"
    feed(
        hl7(
            "SIU^S13^SIU_S12",
            "20240102080000",
            moved_sch,
            PID,
            AIS.replace("20240110090000", "20240111100000"),
        )
    )
    (appointment,) = get_patient(engine, 1)["appointments"]
    assert (
        appointment["placer_id"],
        appointment["filler_id"],
        appointment["event"],
        appointment["start_at"],
        appointment["end_at"],
        appointment["duration_minutes"],
    ) == ("PL-1", "FL-1", "S13", "2024-01-11T10:00:00+00:00", "2024-01-11T10:45:00+00:00", 45)
    assert [(r["kind"], r["code"], r["start_at"]) for r in appointment["resources"]] == [
        ("service", "99213", "2024-01-11T10:00:00+00:00")
    ]
    assert [(appointment_id, old) for appointment_id, old, _ in _changes(engine, "start_at")] == [
        (1, "2024-01-10T09:00:00+00:00")
    ]
    assert len(_changes(engine, "resources")) == 2  # booked with two, then replaced by one


def test_resources_sent_again_as_they_are_stay(feed, engine):
    """An S14 with the resources the appointment has keeps their rows and writes no history of them."""
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", SCH, PID, AIS, AIL))
    before = get_patient(engine, 1)["appointments"][0]["resources"]
    feed(hl7("SIU^S14^SIU_S12", "20240102080000", SCH, PID, AIS, AIL))
    assert get_patient(engine, 1)["appointments"][0]["resources"] == before
    assert len(_changes(engine, "resources")) == 1  # the booking's


def test_an_older_message_leaves_the_appointment(feed):
    """A cancel older than the booking it names changes nothing, and says so."""
    feed(hl7("SIU^S12^SIU_S12", "20240102080000", SCH, PID))
    _, late = feed(hl7("SIU^S15^SIU_S12", "20240101080000", "SCH|PL-1", PID))
    assert "appointment 1 kept: the message is older than the record" in late.detail
    (appointment,) = get_patient(feed.engine, 1)["appointments"]
    assert (appointment["status"], appointment["event"]) == ("Booked", "S12")


def test_a_message_without_an_appointment_id_books_nothing(feed):
    """Without SCH-1 or SCH-2 the patient is applied and no appointment is recorded, with the reason."""
    _, result = feed(hl7("SIU^S12^SIU_S12", "20240101080000", "SCH|||||||||30|min", PID))
    assert (result.patient_id, result.detail) == (
        1,
        "patient 1; no appointment recorded: no SCH-1/SCH-2 appointment identifier",
    )
    assert get_patient(feed.engine, 1)["appointments"] == []


def test_sch_25_gives_the_status_of_a_booking(feed):
    """S12 and S13 book unless SCH-25 gives another status."""
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", SCH + "|" * 14 + "Pending", PID))
    pending = get_patient(feed.engine, 1)["appointments"][0]["status"]
    feed(hl7("SIU^S13^SIU_S12", "20240102080000", SCH, PID))
    assert (pending, get_patient(feed.engine, 1)["appointments"][0]["status"]) == ("Pending", "Booked")


def test_appointment_ids_of_two_namespaces_are_two_appointments(feed, engine):
    """APT001A of clinic A (SCH-2.2) and of clinic B (its MSH-3) are two appointments, each found again."""
    other = PID.replace("P-1^^^PMS", "P-2^^^PMS").replace("DOE^JANE^Q", "ROE^RICHARD").replace("|F|", "|M|")
    sch_a = "SCH||APT001A^CLINIC_A||||||||30|min|^^30^20240110090000"
    sch_b = "SCH||APT001A||||||||30|min|^^30^20240111090000"
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", sch_a, PID))
    feed(hl7("SIU^S12^SIU_S12", "20240101090000", sch_b, other, sender="CLINIC_B"))
    feed(hl7("SIU^S15^SIU_S12", "20240102080000", sch_b, other, sender="CLINIC_B"))
    (first,) = get_patient(engine, 1)["appointments"]
    (second,) = get_patient(engine, 2)["appointments"]
    assert [(a["filler_id"], a["filler_namespace"], a["status"]) for a in (first, second)] == [
        ("APT001A", "CLINIC_A", "Booked"),
        ("APT001A", "CLINIC_B", "Cancelled"),
    ]


def test_an_appointment_named_for_another_patient_is_not_moved(feed, engine):
    """An SIU naming patient 1's appointment under patient 2 leaves it and flags a conflict, once."""
    other = PID.replace("P-1^^^PMS", "P-2^^^PMS").replace("DOE^JANE^Q", "ROE^RICHARD").replace("|F|", "|M|")
    sch = "SCH||APT001A||||||||30|min|^^30^20240110090000"
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", sch, PID))
    _, moved = feed(hl7("SIU^S15^SIU_S12", "20240102080000", sch, other))
    _, again = feed(hl7("SIU^S15^SIU_S12", "20240102080000", sch, other))
    assert moved.detail == "patient 2; identity conflict flagged (appointment_other_patient)"
    assert again.detail == "patient 2; identity conflict already open (appointment_other_patient)"
    (appointment,) = get_patient(engine, 1)["appointments"]
    assert (appointment["status"], get_patient(engine, 2)["appointments"]) == ("Booked", [])
    assert [
        (c["kind"], c["patient_id"], c["other_patient_id"], c["authority"], c["value"])
        for c in get_patient(engine, 2)["conflicts"]
    ] == [("appointment_other_patient", 2, 1, "PMS", "APT001A")]


def test_the_filler_id_finds_the_appointment_before_the_placer_id(feed, engine):
    """An SIU whose placer id is one booking's and filler id another's (newer) changes the filler's only."""
    feed(hl7("SIU^S12^SIU_S12", "20240101080000", "SCH|PL-1||||||||30|min|^^30^20240110090000", PID))
    feed(hl7("SIU^S12^SIU_S12", "20240101090000", "SCH|PL-2|FL-2|||||||30|min|^^30^20240111090000", PID))
    feed(hl7("SIU^S15^SIU_S12", "20240102080000", "SCH|PL-1|FL-2|||||||30|min|^^30^20240111090000", PID))
    appointments = get_patient(engine, 1)["appointments"]
    assert {a["filler_id"]: (a["placer_id"], a["status"]) for a in appointments} == {
        None: ("PL-1", "Booked"),
        "FL-2": ("PL-1", "Cancelled"),
    }
