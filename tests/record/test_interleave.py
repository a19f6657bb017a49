"""Arrival order across systems: PMS, EMR and lab journeys interleaved at random end as in file order.

Each system keeps its own order; the three are shuffled together with a seed. The record compared
is who is one person (the identifiers of each active patient) and what each person holds: birth
date, sex, phones and addresses (as shown, across links), visits, orders, results, allergies, and
the open worklist.

Demographics are last writer by message time (EVN-2, else MSH-7), field by field: the lab's
results at 14:00, which send no phone, do not keep the PMS update of 12:00 from setting one when
it arrives after them; and when the EMR's PID links the PMS patient to the one the lab created,
the person shows the PMS address that only the linked-away row holds.
"""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from engine.record import schema
from engine.record.ingest import RecordIngestor
from engine.record.operations import RecordOperator
from engine.record.query import get_patient
from tests.fakes.record import NOW, Feeder, hl7

_FAMILY = ["Smith", "Nguyen", "Garcia", "Okafor", "Kowalski", "Haddad"]
_GIVEN = ["Anna", "Ben", "Chloe", "Dev", "Eli", "Fay"]


def journeys(seed: int, people: int = 6) -> dict[str, list[str]]:
    """Each system's messages, in its own order, about ``people`` people and a pair of look-alikes."""
    rng = random.Random(seed)
    systems: dict[str, list[str]] = {"PMS": [], "EMR": [], "LAB": []}
    for n in range(people):
        family, given = rng.choice(_FAMILY), rng.choice(_GIVEN)
        born, sex = f"19{rng.randint(40, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}", rng.choice("FM")
        day = f"202401{n + 10:02d}"
        demographics = f"{family}^{given}||{born}|{sex}"
        pms, emr = f"P-{n}^^^PMS^MR", f"E-{n}^^^EMR^MR"

        def at(hour: int, day=day) -> str:
            return f"{day}{hour:02d}0000"

        systems["PMS"] += [
            hl7(
                "ADT^A04^ADT_A01",
                at(8),
                f"PID|1||{pms}||{demographics}|||{n} Oak Rd^^Town^ST^1000{n}||555-01{n}",
            ),
            hl7("ADT^A08^ADT_A01", at(12), f"PID|1||{pms}||{demographics}|||||555-02{n}"),
        ]
        systems["EMR"] += [
            hl7(
                "ADT^A01^ADT_A01",
                at(10),
                f"PID|1||{emr}~{pms}||{demographics}",
                f"PV1|1|I|W{n}^1^A||||||||||||||||V-{n}^^^EMR^VN",
                sender="EMR",
            ),
            hl7(
                "ADT^A08^ADT_A01",
                at(13),
                f"PID|1||{emr}||{demographics}",
                f"AL1|1|DA|PCN{n}^Penicillin",
                sender="EMR",
            ),
        ]
        value = rng.randint(40, 90) / 10
        systems["LAB"] += [
            hl7(
                "ORU^R01^ORU_R01",
                at(9),
                f"PID|1||{emr}||{demographics}",
                f"OBR|1||L-{n}|GLU^Glucose^L",
                f"OBX|1|NM|GLU^Glucose^L||{value}|mmol/L|||||F",
                sender="LAB",
            ),
            hl7(
                "ORU^R01^ORU_R01",
                at(14),
                f"PID|1||{emr}||{demographics}",
                f"OBR|1||L-{n}|GLU^Glucose^L",
                f"OBX|1|NM|GLU^Glucose^L||{value + 1}|mmol/L|||||C",
                sender="LAB",
            ),
        ]
    # Two different people alike in name, birth date and sex, one known to PMS, one to the EMR.
    twin = "Twin^Tess||19900101|F"
    systems["PMS"].append(
        hl7("ADT^A04^ADT_A01", "2024020108000", f"PID|1||P-T^^^PMS^MR||{twin}|||1 A St^^X^ST^1")
    )
    systems["EMR"].append(
        hl7("ADT^A04^ADT_A01", "2024020109000", f"PID|1||E-T^^^EMR^MR||{twin}|||9 B St^^Y^ST^9", sender="EMR")
    )
    return systems


def file_order(systems: dict[str, list[str]]) -> list[str]:
    """Every message by its MSH-7 time (the order the journeys were written in)."""
    return sorted((m for messages in systems.values() for m in messages), key=lambda m: m.split("|")[6])


def interleaved(systems: dict[str, list[str]], seed: int) -> list[str]:
    """The systems' messages shuffled together, each system's kept in its own order."""
    rng = random.Random(seed)
    queues = {name: list(messages) for name, messages in systems.items()}
    order = []
    while any(queues.values()):
        name = rng.choice([name for name, queue in queues.items() if queue])
        order.append(queues[name].pop(0))
    return order


def record_of(engine) -> dict:
    """Each active person by their identifiers: what the record holds of them."""
    s = schema
    with engine.connect() as connection:

        def of(table, *columns, patient_id):
            statement = sa.select(*(table.c[name] for name in columns)).where(
                table.c.patient_id == patient_id
            )
            return sorted(tuple(row) for row in connection.execute(statement))

        people = {}
        active = connection.execute(
            sa.select(s.patients.c.id, s.patients.c.birth_date, s.patients.c.sex).where(
                s.patients.c.merged_into_id.is_(None)
            )
        ).all()
        for patient_id, born, sex in active:
            ids = frozenset(of(s.identifiers, "authority", "value", patient_id=patient_id))
            person = get_patient(engine, patient_id)  # demographics as shown: across the links
            people[ids] = {
                "born": (born, sex),
                "visits": of(s.visits, "visit_number", "status", patient_id=patient_id),
                "orders": of(s.orders, "filler_number", patient_id=patient_id),
                "results": of(s.observations, "code", "value", "status", patient_id=patient_id),
                "allergies": of(s.allergies, "code", patient_id=patient_id),
                "phones": sorted((t["use"], t["value"]) for t in person["telecoms"]),
                "addresses": sorted((a["line1"], a["postal_code"]) for a in person["addresses"]),
            }
    worklist = sorted(item["kind"] for item in RecordOperator(engine).worklist())
    return {"people": people, "worklist": worklist}


def applied(engine, order: list[str]) -> dict:
    """The record after applying ``order`` to an empty record (the tables emptied first)."""
    with engine.begin() as connection:
        for table in reversed(schema.metadata.sorted_tables):
            if table.name.startswith("record_") or table.name == "messages":
                connection.execute(table.delete())
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    for message in order:
        feed(message)
    return record_of(engine)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_interleaved_systems_end_in_the_record_of_file_order(engine, seed):
    """Six people's PMS, EMR and lab journeys in a random interleaving: the same people and facts."""
    systems = journeys(seed)
    expected = applied(engine, file_order(systems))
    assert len(expected["people"]) == 6 + 2  # the look-alikes stay two
    assert expected["worklist"] == ["possible_duplicate"]
    for n in range(6):
        person = next(held for ids, held in expected["people"].items() if ("PMS", f"P-{n}") in ids)
        # The A04's address (no later message sends one), the A08's phone (the newest that sends one).
        assert person["addresses"] == [(f"{n} Oak Rd", f"1000{n}")]
        assert person["phones"] == [("home", f"555-02{n}")]
    assert applied(engine, interleaved(systems, seed)) == expected
