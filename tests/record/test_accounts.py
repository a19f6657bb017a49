"""Accounts and visits merged: A41 moves visits to the surviving account, A42 a visit's facts to the survivor.

Each is applied once: the same event again (a new message id) changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.record import schema
from engine.record.fhir import everything
from engine.record.query import get_patient
from tests.fakes.record import hl7
from tests.record.test_fhir import BASE, validate

PID = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F"


def _pid(account: str) -> str:
    return f"{PID}||||||||||{account}"


def _visits(engine) -> list[tuple]:
    """(id, visit number, account, merged into) of every visit, by id."""
    v = schema.visits.c
    with engine.connect() as connection:
        statement = sa.select(v.id, v.visit_number, v.account_number, v.merged_into_id).order_by(v.id)
        return [tuple(row) for row in connection.execute(statement)]


def _facts(engine) -> list[tuple]:
    """(table, visit id) of every diagnosis, procedure, order and charge."""
    found = []
    with engine.connect() as connection:
        for table in (schema.diagnoses, schema.procedures, schema.orders, schema.transactions):
            found += [(table.name, row) for row in connection.execute(sa.select(table.c.visit_id)).scalars()]
    return sorted(found)


def test_the_visit_keeps_its_account_from_pid_18(feed):
    """A visit takes PID-18.1 as its account number; an ADT without PID-18 leaves it, a new one changes it.

    The FHIR Encounter refers to the account by its number.
    """
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", _pid("ACC-1^^^HOSP"), "PV1|1|I|W1||||||||||||||||V-1"))
    feed(hl7("ADT^A08^ADT_A01", "20240101090000", PID, "PV1|1|I|W1||||||||||||||||V-1"))
    assert _visits(feed.engine) == [(1, "V-1", "ACC-1", None)]
    feed(hl7("ADT^A08^ADT_A01", "20240101100000", _pid("ACC-2"), "PV1|1|I|W1||||||||||||||||V-1"))
    assert _visits(feed.engine) == [(1, "V-1", "ACC-2", None)]
    bundle = everything(feed.engine, 1, base_url=BASE)
    validate(bundle)
    encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    assert encounter["account"] == [{"type": "Account", "identifier": {"value": "ACC-2"}}]


def test_a41_moves_the_prior_accounts_visits_to_the_surviving_account_once(feed):
    """A41: the patient's visits of MRG-3's account take PID-18's; sent again, nothing moves."""
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", _pid("ACC-1"), "PV1|1|I|W1||||||||||||||||V-1"))
    feed(hl7("ADT^A04^ADT_A01", "20240102080000", _pid("ACC-2"), "PV1|1|O|C1||||||||||||||||V-2"))
    feed(hl7("ADT^A04^ADT_A01", "20240103080000", _pid("ACC-3"), "PV1|1|O|C1||||||||||||||||V-3"))
    a41 = hl7("ADT^A41^ADT_A39", "20240104080000", _pid("ACC-2"), "MRG|P-1^^^PMS^MR||ACC-1")
    _, first = feed(a41)
    assert (first.applied, first.patient_id) == (True, 1)
    assert "visits 1 moved to the surviving account" in first.detail
    after = _visits(feed.engine)
    assert after == [(1, "V-1", "ACC-2", None), (2, "V-2", "ACC-2", None), (3, "V-3", "ACC-3", None)]
    _, again = feed(a41)
    assert "nothing to move" in again.detail
    assert _visits(feed.engine) == after


def test_a42_moves_the_prior_visits_facts_to_the_surviving_visit_once(feed):
    """A42: MRG-5's visit is merged into PV1-19's, its diagnoses, orders and charges with it; once.

    A later message naming the prior visit number reaches the surviving visit.
    """
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PID, "PV1|1|I|W1||||||||||||||||V-1"))
    feed(
        hl7(
            "ADT^A04^ADT_A01",
            "20240101090000",
            PID,
            "PV1|1|I|W1||||||||||||||||V-2",
            "DG1|1||R07.9^Chest pain^I10",
            "PR1|1||93000^ECG^CPT|||20240101093000",
        )
    )
    feed(
        hl7(
            "ORU^R01^ORU_R01",
            "20240101100000",
            PID,
            "PV1|1|I|W1||||||||||||||||V-2",
            "OBR|1||LAB-1|GLU^Glucose^L",
            "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F",
        )
    )
    feed(
        hl7(
            "DFT^P03^DFT_P03",
            "20240101110000",
            PID,
            "PV1|1|I|W1||||||||||||||||V-2",
            "FT1|1|TX-1||20240101|20240101|CG|99214^Visit^CPT|||1|150",
        )
    )
    assert {visit for _, visit in _facts(feed.engine)} == {2}
    a42 = hl7(
        "ADT^A42^ADT_A39", "20240102080000", PID, "MRG|P-1^^^PMS^MR||||V-2", "PV1|1|I|W1||||||||||||||||V-1"
    )
    _, first = feed(a42)
    assert "visit 2 merged into visit 1" in first.detail
    assert _visits(feed.engine) == [(1, "V-1", None, None), (2, "V-2", None, 1)]
    moved = _facts(feed.engine)
    assert [visit for _, visit in moved] == [1, 1, 1, 1]
    _, again = feed(a42)
    assert "no visit of the prior number left to merge" in again.detail
    assert _facts(feed.engine) == moved
    feed(
        hl7(
            "DFT^P03^DFT_P03",
            "20240102090000",
            PID,
            "PV1|1|I|W1||||||||||||||||V-2",
            "FT1|1|TX-2||20240102|20240102|CG|99215^Visit^CPT|||1|200",
        )
    )
    assert {visit for _, visit in _facts(feed.engine)} == {1}
    assert len(get_patient(feed.engine, 1)["visits"]) == 2
    bundle = everything(feed.engine, 1, base_url=BASE)
    validate(bundle)
    encounters = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert [e["id"] for e in encounters] == ["1"]  # the merged visit is part of the survivor


def test_a42_to_an_unknown_visit_renumbers_the_prior_one(feed):
    """A42 whose surviving visit the record does not know gives the prior visit the surviving number."""
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PID, "PV1|1|I|W1||||||||||||||||V-1"))
    a42 = hl7(
        "ADT^A42^ADT_A39", "20240102080000", PID, "MRG|P-1^^^PMS^MR||||V-1", "PV1|1|I|W1||||||||||||||||V-9"
    )
    _, first = feed(a42)
    assert "visit 1 renumbered" in first.detail
    _, again = feed(a42)
    assert "no visit of the prior number left to merge" in again.detail
    assert _visits(feed.engine) == [(1, "V-9", None, None)]
