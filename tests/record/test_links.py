"""Links of patients: cross-references, the strict rule, unknown prior ids, repeated merges, ADT events."""

from __future__ import annotations

import sqlalchemy as sa

from engine.record import schema
from engine.record.ingest import RecordIngestor
from engine.record.operations import Operator, RecordOperator
from engine.record.query import get_patient
from tests.fakes.record import NOW, Feeder, hl7

PMS_PID = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F|||1 Oak Rd^^Town^ST^22222||555-0100"
# The same name, birth date and sex, a different person: another address and phone, another system.
EMR_TWIN = "PID|1||E-9^^^EMR^MR||Smith^Anna||19800517|F|||9 Elm St^^City^ST^99999||555-0199"
LAB_ORU = (
    "PID|1||E-1^^^EMR^MR||SMITH^ANNA||19800517|F",
    "OBR|1||LAB-1|GLU^Glucose^L",
    "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F",
)
BY = Operator("ops", "cli")


def merges(engine) -> list[tuple]:
    """(kind, survivor, prior, unmerged) of every merge, oldest first."""
    m = schema.merges.c
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(m.kind, m.survivor_id, m.prior_id, m.unmerged_at.is_not(None)).order_by(m.id)
            )
        ]


def test_look_alikes_from_two_systems_are_never_linked_and_go_on_the_worklist(feed):
    """Same family, given, birth date and sex from PMS and EMR, nothing else shared: two, one review."""
    first = feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))[1].patient_id
    second = feed(hl7("ADT^A04^ADT_A01", "20240102080000", EMR_TWIN, sender="EMR"))[1].patient_id
    assert first != second
    kept = get_patient(feed.engine, first)
    assert [a["line1"] for a in kept["addresses"]] == ["1 Oak Rd"]
    assert [t["value"] for t in kept["telecoms"]] == ["555-0100"]
    [item] = RecordOperator(feed.engine).worklist()
    assert (item["kind"], item["patient_id"], item["other_patient_id"]) == (
        "possible_duplicate",
        second,
        first,
    )
    assert merges(feed.engine) == []


def test_demographic_matching_links_look_alikes_as_a_reversible_rule_link(engine):
    """With match: demographic the look-alike is linked (kind rule), reversibly.

    The person shows the newer registration's address, but the first patient's row keeps its own,
    which is the patient's again once unlinked.
    """
    from engine.record.identity import IdentityRule

    rule = IdentityRule(strict=False)
    feed = Feeder(engine, RecordIngestor(engine, identity_rule=rule, clock=lambda: NOW))
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    _, result = feed(hl7("ADT^A04^ADT_A01", "20240102080000", EMR_TWIN, sender="EMR"))
    assert result.patient_id == 1
    assert merges(engine) == [("rule", 1, 2, False)]
    assert [a["line1"] for a in get_patient(engine, 1)["addresses"]] == ["9 Elm St"]
    RecordOperator(engine, clock=lambda: NOW).unlink(1, reason="two people", by=BY)
    assert [a["line1"] for a in get_patient(engine, 1)["addresses"]] == ["1 Oak Rd"]
    assert [i["value"] for i in get_patient(engine, 2)["identifiers"]] == ["E-9"]
    assert get_patient(engine, 2)["merged_into"] is None


def test_lab_before_registration_then_a_cross_reference_ends_as_one_person(feed):
    """Lab ORU (EMR id) before the PMS A04 makes two; the EMR A01 with both ids links them, and why."""
    lab = feed(hl7("ORU^R01^ORU_R01", "20240101070000", *LAB_ORU, sender="LAB"))[1].patient_id
    pms = feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))[1].patient_id
    assert lab != pms
    both = "PID|1||E-1^^^EMR^MR~P-1^^^PMS^MR||SMITH^ANNA||19800517|F"
    _, result = feed(hl7("ADT^A01^ADT_A01", "20240101090000", both, sender="EMR"))
    person = get_patient(feed.engine, result.patient_id)
    assert {(i["authority"], i["value"]) for i in person["identifiers"]} == {("EMR", "E-1"), ("PMS", "P-1")}
    assert [o["filler_number"] for o in person["orders"]] == ["LAB-1"]
    [merge] = [m for m in person["merges"] if m["kind"] == "cross_reference"]
    assert merge["source_system"] == "EMR"
    assert merge["reason"] == f"EMR lists identifiers of patients {lab} and {pms} in one PID (message 3)"
    assert RecordOperator(feed.engine).worklist() == []  # the lab's possible duplicate resolved by the link


def test_a_cross_reference_of_contradicting_patients_is_a_conflict(feed):
    """Two patients whose birth dates differ, listed in one PID, stay apart with a conflict saying why."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    feed(hl7("ORU^R01^ORU_R01", "20240101070000", LAB_ORU[0].replace("19800517", "19810101"), *LAB_ORU[1:]))
    both = "PID|1||P-1^^^PMS^MR~E-1^^^EMR^MR||SMITH^ANNA||19800517|F"
    feed(hl7("ADT^A08^ADT_A01", "20240101090000", both, sender="EMR"))
    assert merges(feed.engine) == []
    kinds = [(i["kind"], i["detail"].rsplit(": ", 1)[-1]) for i in RecordOperator(feed.engine).worklist()]
    assert ("identifiers_disagree", "their birth date differ") in kinds


def test_cross_references_of_an_untrusted_sender_only_flag(engine):
    """With trust_cross_references [PMS], an EMR PID joining two patients is a conflict, not a link."""
    ingestor = RecordIngestor(engine, trust_cross_references=frozenset({"PMS"}), clock=lambda: NOW)
    feed = Feeder(engine, ingestor)
    feed(hl7("ORU^R01^ORU_R01", "20240101070000", *LAB_ORU, sender="LAB"))
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    both = "PID|1||E-1^^^EMR^MR~P-1^^^PMS^MR||SMITH^ANNA||19800517|F"
    feed(hl7("ADT^A01^ADT_A01", "20240101090000", both, sender="EMR"))
    assert merges(engine) == []
    assert "identifiers_disagree" in [item["kind"] for item in RecordOperator(engine).worklist()]


def test_an_unknown_prior_id_is_an_alias_and_a_contradicting_later_use_is_a_conflict(feed):
    """A40 of unknown OLD-1 keeps it as an alias; an A04 of another person under OLD-1 renames nobody."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    feed(hl7("ADT^A40^ADT_A39", "20240102080000", PMS_PID, "MRG|OLD-1^^^PMS^MR"))
    other = "PID|1||OLD-1^^^PMS^MR||JONES^BOB||19600101|M"
    _, result = feed(hl7("ADT^A04^ADT_A01", "20240103080000", other))
    assert result.patient_id != 1
    survivor = get_patient(feed.engine, 1)
    assert (survivor["birth_date"], survivor["sex"]) == ("1980-05-17", "F")
    assert ("OLD-1", True) in [(i["value"], i["alias"]) for i in survivor["identifiers"]]
    [item] = RecordOperator(feed.engine).worklist()
    assert (item["kind"], item["patient_id"], item["other_patient_id"], item["value"]) == (
        "alias_contradicts",
        result.patient_id,
        1,
        "OLD-1",
    )


def test_a_repeated_merge_writes_no_second_row(feed):
    """The same A40 sent again (a new message id) is a no-op: one merge row."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", PMS_PID.replace("P-1^", "P-2^")))
    a40 = hl7("ADT^A40^ADT_A39", "20240102080000", PMS_PID, "MRG|P-2^^^PMS^MR")
    feed(a40)
    _, again = feed(a40)
    assert merges(feed.engine) == [("merge", 1, 2, False)]
    assert "merge already done" in again.detail


def test_a24_links_and_a37_unlinks_two_patients(feed):
    """A24 with two PIDs links their patients (kind link); A37 of the same two undoes it."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PMS_PID))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", EMR_TWIN, sender="EMR"))
    pids = (PMS_PID, EMR_TWIN.replace("E-9^^^EMR", "E-9^^^EMR"))
    feed(hl7("ADT^A24^ADT_A24", "20240102080000", *pids))
    assert merges(feed.engine) == [("link", 1, 2, False)]
    feed(hl7("ADT^A37^ADT_A37", "20240103080000", *pids))
    assert merges(feed.engine) == [("link", 1, 2, True)]
    assert get_patient(feed.engine, 2)["merged_into"] is None


def test_a47_changes_an_identifier_and_a45_moves_a_visit(feed):
    """A47 gives the MRG-1 identifier the PID-3 value; A45 moves the MRG-5 visit to the PID's patient."""
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PMS_PID, "PV1|1|I|W1||||||||||||||||V-7^^^PMS^VN"))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", EMR_TWIN, sender="EMR"))
    feed(hl7("ADT^A47^ADT_A30", "20240102080000", PMS_PID.replace("P-1^", "P-100^"), "MRG|P-1^^^PMS^MR"))
    assert [i["value"] for i in get_patient(feed.engine, 1)["identifiers"]] == ["P-100"]
    _, moved = feed(
        hl7("ADT^A45^ADT_A45", "20240102090000", EMR_TWIN, "MRG|P-100^^^PMS^MR||||V-7", sender="EMR")
    )
    assert moved.patient_id == 2
    assert [v["visit_number"] for v in get_patient(feed.engine, 2)["visits"]] == ["V-7"]
    assert get_patient(feed.engine, 1)["visits"] == []
