"""engine/record/apply/oru.py: results, an order and its observations, and which result wins."""

from __future__ import annotations

from engine.record.query import get_patient
from tests.fakes.record import PID, history, hl7


def test_preliminary_never_replaces_final(feed):
    """A P result arriving after the F for the same observation is ignored; a later C replaces the value."""
    obr = "OBR|1||F-1|GLU^Glucose^L"
    feed(hl7("ORU^R01", "20240101080000", PID, obr, "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F"))
    _, result = feed(hl7("ORU^R01", "20240101090000", PID, obr, "OBX|1|NM|GLU^Glucose^L||9.9|mmol/L|||||P"))
    assert "observation 1 kept: status P does not replace F" in result.detail
    feed(hl7("ORU^R01", "20240101100000", PID, obr, "OBX|1|NM|GLU^Glucose^L||5.6|mmol/L|||||C"))
    (observation,) = get_patient(feed.engine, 1)["orders"][0]["observations"]
    assert (observation["value"], observation["status"]) == ("5.6", "C")


def test_an_order_sent_again_updates_each_observation_by_its_key(feed):
    """Results sent again update observations of the same code and occurrence, add new ones, keep the rest."""
    obr = "OBR|1||F-1|PANEL^Panel^L"
    feed(
        hl7(
            "ORU^R01",
            "20240101080000",
            PID,
            obr,
            "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F",
            "OBX|2|TX|||line one||||||F",
            "OBX|3|TX|||line two||||||F",
            "OBX|4|NM|NA^Sodium^L||140|mmol/L|||||F",
        )
    )
    _, result = feed(
        hl7(
            "ORU^R01",
            "20240101090000",
            PID,
            obr,
            "OBX|1|TX|||line one||||||F",
            "OBX|2|TX|||line 2||||||C",
            "OBX|3|NM|K^Potassium^L||4.1|mmol/L|||||F",
            "OBX|4|NM|GLU^Glucose^L||5.9|mmol/L|||||C",
        )
    )
    assert result.detail == "patient 1"
    observations = get_patient(feed.engine, 1)["orders"][0]["observations"]
    assert [(o["code"], o["value"], o["occurrence"], o["status"]) for o in observations] == [
        ("GLU", "5.9", 1, "C"),
        (None, "line one", 1, "F"),
        (None, "line 2", 2, "C"),
        ("NA", "140", 1, "F"),
        ("K", "4.1", 1, "F"),
    ]


def test_observations_that_are_the_same_once_stored_are_updated_in_turn(feed, engine):
    """Two OBX with codes alike once stored name one observation: the second update starts from the first."""
    long_code = "X" * 100
    obr = "OBR|1||F-1|PANEL^Panel^L"
    feed(
        hl7(
            "ORU^R01",
            "20240101080000",
            PID,
            obr,
            f"OBX|1|ST|{long_code}A^First^L||one||||||F",
            f"OBX|2|ST|{long_code}B^Second^L||two||||||F",
        )
    )
    feed(
        hl7(
            "ORU^R01",
            "20240101090000",
            PID,
            obr,
            f"OBX|1|ST|{long_code}A^First^L||three||||||F",
            f"OBX|2|ST|{long_code}B^Second^L||four||||||F",
        )
    )
    observations = get_patient(engine, 1)["orders"][0]["observations"]
    assert [(o["id"], o["value"], o["text"]) for o in observations] == [
        (1, "four", "Second"),
        (2, "two", "Second"),
    ]
    changes = history(engine, "record_observations", "entity_id", "field", "old_value", "new_value")
    assert [tuple(change) for change in changes] == [
        (1, "value", "one", "three"),
        (1, "message_id", "1", "2"),
        (1, "text", "First", "Second"),
        (1, "value", "three", "four"),
    ]


def test_results_for_an_unknown_patient_create_it(feed):
    """An ORU whose PID is unknown registers the patient from the PID."""
    _, result = feed(
        hl7(
            "ORU^R01",
            "20240101080000",
            "PID|1||L-1^^^LAB^PI||NEW^PATIENT||19900909|M",
            "OBR|1||F-9|X^X^L",
            "OBX|1|ST|X^X^L||ok||||||F",
            sender="LAB",
        )
    )
    patient = get_patient(feed.engine, result.patient_id)
    assert (patient["birth_date"], patient["sex"], patient["names"][0]["family"]) == (
        "1990-09-09",
        "M",
        "NEW",
    )
    assert patient["orders"][0]["observations"][0]["value"] == "ok"


def test_an_order_is_found_by_its_number_and_namespace_and_never_moved(feed, engine):
    """Two labs' F-1 are two orders; a lab's F-1 named under another patient is a conflict, not a move."""
    other = PID.replace("P-1^^^PMS", "P-2^^^PMS").replace("DOE^JANE^Q", "ROE^RICHARD").replace("|F|", "|M|")
    obx = "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F"
    feed(hl7("ORU^R01", "20240101080000", PID, "OBR|1||F-1^LAB_A|GLU^Glucose^L", obx, sender="LAB_A"))
    feed(hl7("ORU^R01", "20240101090000", other, "OBR|1||F-1^LAB_B|GLU^Glucose^L", obx, sender="LAB_B"))
    _, moved = feed(
        hl7("ORU^R01", "20240101100000", other, "OBR|1||F-1^LAB_A|GLU^Glucose^L", obx.replace("5.4", "7"))
    )
    assert moved.detail == "patient 2; identity conflict flagged (order_other_patient)"
    orders = [get_patient(engine, patient)["orders"] for patient in (1, 2)]
    assert [
        [(o["filler_number"], o["filler_namespace"], o["observations"][0]["value"]) for o in found]
        for found in orders
    ] == [[("F-1", "LAB_A", "5.4")], [("F-1", "LAB_B", "5.4")]]
    (conflict,) = get_patient(engine, 2)["conflicts"]
    assert (conflict["kind"], conflict["other_patient_id"], conflict["authority"]) == (
        "order_other_patient",
        1,
        "LAB_A",
    )
