"""engine/record/apply/dft.py: charges and payments (FT1) posted to the patient and the visit."""

from __future__ import annotations

from engine.record.query import get_patient
from tests.fakes.record import PID, PV1, history, hl7

CHARGE = "FT1|1|TX-1|B-1|20240101090000||CG|99213^Office visit^CPT|||1|100.00&USD"
COPAY = "FT1|2||B-1|20240101090000||PY|COPAY^Copay^LOCAL|||1|-10&USD"


def _transactions(engine) -> list[tuple]:
    """(id, FT1-2, type, amount, visit id, message id) of the patient's transactions."""
    return [
        (t["id"], t["transaction_id"], t["transaction_type"], t["amount"], t["visit_id"], t["message_id"])
        for t in get_patient(engine, 1)["transactions"]
    ]


def test_each_ft1_is_a_transaction_of_the_patient_and_the_visit(feed, engine):
    """A P03 posts every FT1 on the patient and on the PV1's visit, created when it is not known yet."""
    _, result = feed(hl7("DFT^P03^DFT_P03", "20240102080000", PID, PV1, CHARGE, COPAY))
    assert (result.applied, result.detail) == (True, "patient 1")
    assert [v["visit_number"] for v in get_patient(engine, 1)["visits"]] == ["V-1"]
    assert _transactions(engine) == [(1, "TX-1", "CG", "100", 1, 1), (2, None, "PY", "-10", 1, 1)]


def test_a_transaction_sent_again_is_updated_and_one_without_id_found_by_content(feed, engine):
    """An FT1 sent again with FT1-2 updates the transaction (history kept); one without FT1-2 is the same."""
    feed(hl7("DFT^P03^DFT_P03", "20240102080000", PID, PV1, CHARGE, COPAY))
    feed(hl7("DFT^P03^DFT_P03", "20240103080000", PID, PV1, CHARGE.replace("100.00", "120.00"), COPAY))
    assert _transactions(engine) == [(1, "TX-1", "CG", "120", 1, 2), (2, None, "PY", "-10", 1, 1)]
    assert history(engine, "record_transactions", "entity_id", "field", "old_value", "new_value") == [
        (1, "amount", "100", "120"),
        (1, "message_id", "1", "2"),
    ]


def test_an_ft1_without_id_differing_in_any_key_field_is_another_transaction(feed, engine):
    """Without FT1-2 a charge is its visit, date, code, quantity, amount and type: one differing is new."""
    feed(hl7("DFT^P03^DFT_P03", "20240102080000", PID, PV1, COPAY))
    variants = [
        COPAY.replace("20240101090000", "20240101100000"),
        COPAY.replace("COPAY^Copay", "COPAY2^Copay"),
        COPAY.replace("|1|-10&USD", "|2|-10&USD"),
        COPAY.replace("-10&USD", "-12&USD"),
        COPAY.replace("|PY|", "|CG|"),
        COPAY,
    ]
    feed(hl7("DFT^P03^DFT_P03", "20240103080000", PID, PV1, *variants))
    other_visit = PV1.replace("V-1^", "V-2^")
    feed(hl7("DFT^P03^DFT_P03", "20240104080000", PID, other_visit, COPAY))
    assert [(t[0], t[2], t[3], t[4]) for t in _transactions(engine)] == [
        (1, "PY", "-10", 1),
        (2, "PY", "-10", 1),
        (3, "PY", "-10", 1),
        (4, "PY", "-10", 1),
        (5, "PY", "-12", 1),
        (6, "CG", "-10", 1),
        (7, "PY", "-10", 2),
    ]


def test_an_older_message_keeps_the_transaction(feed, engine):
    """A P03 older than the transaction it names leaves it as it is, and says so."""
    feed(hl7("DFT^P03^DFT_P03", "20240102080000", PID, PV1, CHARGE))
    _, late = feed(hl7("DFT^P03^DFT_P03", "20240101080000", PID, PV1, CHARGE.replace("100.00", "90.00")))
    assert "transactions 1 kept: the message is older than the record" in late.detail
    assert _transactions(engine) == [(1, "TX-1", "CG", "100", 1, 1)]


def test_p11_applies_and_other_dft_events_are_not_recorded(feed, engine):
    """P11 (details of a transaction) applies as P03 does; a DFT event of neither is not recorded."""
    _, p11 = feed(hl7("DFT^P11^DFT_P11", "20240102080000", PID, PV1, CHARGE))
    _, p12 = feed(hl7("DFT^P12^DFT_P11", "20240102080000", PID, PV1, CHARGE.replace("TX-1", "TX-2")))
    assert (p11.applied, p12.applied, p12.detail) == (True, False, "DFT^P12 is not recorded")
    assert _transactions(engine) == [(1, "TX-1", "CG", "100", 1, 1)]
