"""engine/record/ingest.py and apply/: event semantics, idempotency, order, identity, merges, the corpus."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import RecordError, StoreError
from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.record import schema
from engine.record.identity import IdentityRule
from engine.record.ingest import IngestResult, RecordIngestor
from engine.record.query import get_patient
from engine.record.writer import Writer
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.record import (
    JOURNEY,
    NOW,
    PID,
    PV1,
    RECEIVED,
    SAMPLES,
    Feeder,
    corpus_messages,
    hl7,
    store_message,
    store_messages,
)


def dump(engine) -> dict:
    """Every row of every record table (history included), for comparing whole record states."""
    with engine.connect() as connection:
        return {
            name: [
                tuple(row)
                for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns))
            ]
            for name, table in schema.TABLES.items()
        }


def test_same_message_twice_changes_nothing(feed):
    """Every journey message applied again under its id is already_applied and leaves every row as it was."""
    stored = [(feed(name)[0], name) for name in JOURNEY]
    before = dump(feed.engine)
    for message_id, name in stored:
        again = feed.apply(message_id, (SAMPLES / name).read_bytes())
        assert again.already_applied
    assert dump(feed.engine) == before


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


def test_hl7_null_clears_and_empty_keeps(feed):
    """PID-8 ``""`` clears the sex; an absent PID-11 keeps the address."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(hl7("ADT^A08^ADT_A01", "20240102080000", 'PID|1||P-1^^^PMS^PI||DOE^JANE^Q||19700101|""'))
    patient = get_patient(feed.engine, 1)
    assert patient["sex"] is None
    assert [a["line1"] for a in patient["addresses"]] == ["1 Main St"]


def _lists_read(monkeypatch) -> list[str]:
    """The tables of the patient's lists that the writer reads from now on (appended as they are read)."""
    read = []
    rows = Writer.rows

    def spy(self, table, *keys, **options):
        if table.name in ("record_names", "record_addresses", "record_telecoms", "record_contacts"):
            read.append(table.name)
        return rows(self, table, *keys, **options)

    monkeypatch.setattr(Writer, "rows", spy)
    return read


def _list_history(engine) -> list[tuple]:
    h = schema.history
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(h.c.field, h.c.message_id).where(h.c.entity == "record_patients").order_by(h.c.id)
            )
        ]


NK1 = "NK1|1|DOE^JOHN|SPO^Spouse^HL70063||^PRN^PH^^1^555^1234567"


def test_lists_sent_as_stored_are_not_read_and_one_changed_field_is_applied(feed, engine, monkeypatch):
    """A PID and NK1 sent again as stored leave lists unread; a changed address replaces addresses alone."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID, NK1))
    read = _lists_read(monkeypatch)
    feed(hl7("ADT^A08^ADT_A01", "20240102080000", PID, NK1))
    assert read == []
    moved, _ = feed(hl7("ADT^A08^ADT_A01", "20240103080000", PID.replace("^Town^", "^City^"), NK1))
    assert read == ["record_addresses"]
    patient = get_patient(engine, 1)
    assert (
        [a["city"] for a in patient["addresses"]],
        [n["family"] for n in patient["names"]],
        [c["family"] for c in patient["contacts"]],
    ) == (["City"], ["DOE"], ["DOE"])
    assert _list_history(engine) == [("addresses", moved)]
    feed(
        hl7(
            "ADT^A08^ADT_A01",
            "20240104080000",
            PID.replace("^Town^", "^City^"),
            NK1.replace("DOE^JOHN", "ROE^JOHN"),
        )
    )
    assert read == ["record_addresses", "record_contacts"]
    assert [c["family"] for c in get_patient(engine, 1)["contacts"]] == ["ROE"]


def test_a_patient_without_list_digests_compares_its_lists_as_before(feed, engine, monkeypatch):
    """A patient from before 0008 (no digests) has its lists compared once, then known; a new name applies."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    with engine.begin() as connection:
        connection.execute(schema.patients.update().values(list_digests=None))
    read = _lists_read(monkeypatch)
    _, renamed = feed(hl7("ADT^A08^ADT_A01", "20240102080000", PID.replace("DOE^JANE", "DOE^JANET")))
    assert read == ["record_names", "record_addresses"]
    feed(hl7("ADT^A08^ADT_A01", "20240103080000", PID.replace("DOE^JANE", "DOE^JANET")))
    assert read == ["record_names", "record_addresses"]
    assert [n["given"] for n in get_patient(engine, 1)["names"]] == ["JANET"]
    assert _list_history(engine) == [("names", renamed.message_id)]


def test_undecodable_bytes_are_stored_replaced(engine, ingestor):
    """Latin-1 bytes read as UTF-8 (lone surrogates) are stored replaced; the id still matches next time."""
    raw = hl7(
        "ADT^A04^ADT_A01", "20240101080000", "PID|1||P-\xe9^^^PMS^PI||M\xfcLLER^J\xd6RG||19700101|M"
    ).encode("latin-1")
    results = [
        ingestor.apply(store_message(engine, raw), Message.parse(decode(raw).text), RECEIVED)
        for _ in range(2)
    ]
    assert [r.patient_id for r in results] == [1, 1]
    patient = get_patient(engine, 1)
    assert [(i["value"], n["family"]) for i, n in zip(patient["identifiers"], patient["names"])] == [
        ("P-?", "M?LLER")
    ]


def test_identifiers_of_two_patients_are_flagged_not_merged(feed):
    """A PID joining identifiers of two patients applies to the first one known and flags the other."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(
        hl7("ADT^A04^ADT_A01", "20240101090000", "PID|1||E-9^^^EMR^MR||ROE^RICHARD||19600202|M", sender="EMR")
    )
    _, result = feed(
        hl7(
            "ADT^A08^ADT_A01",
            "20240102080000",
            "PID|1||P-1^^^PMS^PI~E-9^^^EMR^MR||DOE^JANE^Q||19700101|F",
            sender="EMR",
        )
    )
    assert (result.patient_id, result.detail) == (
        1,
        "patient 1; identity conflict flagged (identifiers_disagree)",
    )
    (conflict,) = get_patient(feed.engine, 1)["conflicts"]
    assert (
        conflict["kind"],
        conflict["patient_id"],
        conflict["other_patient_id"],
        conflict["authority"],
        conflict["value"],
        conflict["resolved_at"],
    ) == ("identifiers_disagree", 1, 2, "EMR", "E-9", None)
    assert [i["value"] for i in get_patient(feed.engine, 2)["identifiers"]] == ["E-9"]
    assert get_patient(feed.engine, 2)["merged_into"] is None


def test_identity_rule_links_a_new_authority(feed):
    """A new lab id with the same normalised name, birth date and sex links, with the rule's reason."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, result = feed(
        hl7("ORU^R01^ORU_R01", "20240102080000", "PID|1||L-5^^^LAB^PI||Doe^Jane||19700101|f", sender="LAB")
    )
    assert result.patient_id == 1
    linked = get_patient(feed.engine, 1)["identifiers"][1]
    assert (linked["authority"], linked["value"], linked["link_reason"]) == (
        "LAB",
        "L-5",
        "identity rule family+given+birth_date+sex matched patient 1 (message 2)",
    )


def test_identity_rule_can_be_narrowed_or_disabled(engine):
    """Without a rule the lab id is a new patient; a family and birth date rule links despite the given."""
    feeds = {
        "none": Feeder(engine, RecordIngestor(engine, identity_rule=None, clock=lambda: NOW)),
        "narrow": Feeder(
            engine,
            RecordIngestor(engine, identity_rule=IdentityRule(("family", "birth_date")), clock=lambda: NOW),
        ),
    }
    feeds["none"](hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, linked = feeds["narrow"](
        hl7("ORU^R01", "20240102080000", "PID|1||L-6^^^LAB^PI||DOE^JOAN||19700101|F", sender="LAB")
    )
    _, unlinked = feeds["none"](
        hl7("ORU^R01", "20240102080000", "PID|1||L-5^^^LAB^PI||DOE^JANE||19700101|F", sender="LAB")
    )
    assert (linked.patient_id, unlinked.patient_id) == (1, 2)


def test_rule_matching_several_patients_creates_and_flags(feed):
    """Two patients alike: a third registration from another system matches both, so it is new and flagged."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(
        hl7(
            "ADT^A04^ADT_A01",
            "20240101090000",
            PID.replace("P-1^^^PMS", "P-2^^^PMS2").replace("19700101", "19700102"),
        )
    )
    feed(hl7("ADT^A08^ADT_A01", "20240101093000", PID.replace("P-1^^^PMS", "P-2^^^PMS2")))
    _, result = feed(
        hl7("ADT^A04^ADT_A01", "20240101100000", PID.replace("P-1^^^PMS", "E-1^^^EMR"), sender="EMR")
    )
    assert result.patient_id == 3
    kinds = [
        (c["kind"], c["patient_id"], c["other_patient_id"]) for c in get_patient(feed.engine, 3)["conflicts"]
    ]
    assert kinds == [("rule_ambiguous", 3, 1), ("rule_ambiguous", 3, 2)]


def test_merge_then_unmerge_restores_both_patients(feed, ingestor):
    """A40 moves visits, orders, identifiers to the survivor; unmerge moves those back, the prior active."""
    feed(hl7("ADT^A01^ADT_A01", "20240101080000", PID, PV1))
    prior_pid = "PID|1||P-2^^^PMS^PI||DOE^JANIE||19700101|F"
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", prior_pid, PV1.replace("V-1", "V-2")))
    feed(
        hl7(
            "ORU^R01^ORU_R01",
            "20240101100000",
            prior_pid,
            "OBR|1||F-1|GLU^Glucose^L|||20240101093000",
            "OBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F",
        )
    )
    before = {1: get_patient(feed.engine, 1), 2: get_patient(feed.engine, 2)}
    _, merged = feed(hl7("ADT^A40^ADT_A39", "20240102080000", PID, "MRG|P-2^^^PMS^PI"))
    assert merged.detail == "patient 1; merge 1: patient 2 merged"
    survivor = get_patient(feed.engine, 1)
    assert [v["visit_number"] for v in survivor["visits"]] == ["V-1", "V-2"]
    assert [(i["value"], i["alias"]) for i in survivor["identifiers"]] == [("P-1", False), ("P-2", True)]
    assert [o["filler_number"] for o in survivor["orders"]] == ["F-1"]
    _, late = feed(
        hl7(
            "ORU^R01^ORU_R01",
            "20240103080000",
            prior_pid,
            "OBR|1||F-2|NA^Sodium^L",
            "OBX|1|NM|NA^Sodium^L||140|mmol/L|||||F",
        )
    )
    assert late.patient_id == 1

    moved = ingestor.unmerge(1, reason="wrong patient")

    assert moved == 4  # identifier, visit, order, observation
    after = {1: get_patient(feed.engine, 1), 2: get_patient(feed.engine, 2)}
    assert after[2]["merged_into"] is None
    assert [i["value"] for i in after[2]["identifiers"]] == ["P-2"]
    assert [v["visit_number"] for v in after[2]["visits"]] == ["V-2"]
    assert (
        [o["filler_number"] for o in after[2]["orders"]]
        == ["F-1"]
        == [o["filler_number"] for o in before[2]["orders"]]
    )
    assert [o["filler_number"] for o in after[1]["orders"]] == [
        "F-2"
    ]  # arrived through the alias after the merge
    (merge,) = after[1]["merges"]
    assert (merge["unmerged_at"], merge["unmerge_reason"]) == (NOW.isoformat(), "wrong patient")
    with pytest.raises(RecordError, match="already undone"):
        ingestor.unmerge(1)
    with pytest.raises(RecordError, match="no merge 99"):
        ingestor.unmerge(99)


def test_merge_of_unknown_prior_keeps_it_as_alias(feed):
    """An A34 with an unknown MRG-1 records the merge with no prior patient and the prior id as an alias."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, result = feed(hl7("ADT^A34^ADT_A30", "20240102080000", PID, "MRG|OLD-7^^^PMS^PI"))
    assert result.detail == "patient 1; merge 1: prior identifiers kept as aliases"
    patient = get_patient(feed.engine, 1)
    assert [(i["value"], i["alias"]) for i in patient["identifiers"]] == [("P-1", False), ("OLD-7", True)]
    assert patient["merges"][0]["prior_id"] is None


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
    h = schema.history
    with engine.connect() as connection:
        changes = connection.execute(
            sa.select(h.c.entity_id, h.c.field, h.c.old_value, h.c.new_value)
            .where(h.c.entity == "record_observations")
            .order_by(h.c.id)
        ).all()
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


def test_unrecorded_events_and_messages_without_pid_are_no_ops(feed):
    """ADT^A60 and an ORU without PID change nothing and say why."""
    _, unknown = feed(hl7("ADT^A60^ADT_A60", "20240101080000", PID))
    _, no_pid = feed(hl7("ORU^R01", "20240101080000", "OBR|1||F-1|X^X^L"))
    assert (unknown.applied, unknown.detail) == (False, "ADT^A60 is not recorded")
    assert (no_pid.applied, no_pid.detail) == (False, "ORU^R01 has no PID: nothing for the record")
    assert dump(feed.engine)["record_patients"] == []


def test_content_that_cannot_be_applied_raises_record_error(feed, engine):
    """A merge without MRG, or a PID naming no one, is refused and leaves no trace (not even as applied)."""
    with pytest.raises(RecordError, match="no MRG"):
        feed(hl7("ADT^A40^ADT_A39", "20240101080000", PID))
    with pytest.raises(RecordError, match="names no identifier"):
        feed(hl7("ADT^A04^ADT_A01", "20240101080000", "PID|1"))
    assert dump(engine)["record_applied_messages"] == []


def test_database_failure_is_a_store_error(engine, ingestor):
    """A database refusing the write (no such message row) surfaces as StoreError, not a SQLAlchemy error."""
    with pytest.raises(StoreError):
        ingestor.apply(424242, Message.parse(hl7("ADT^A04^ADT_A01", "20240101080000", PID)), RECEIVED)


def test_a_batch_answers_each_message_and_isolates_what_fails(feed, ingestor):
    """In one apply_many a merge without MRG and an unknown id fail alone; a repeat is already applied."""
    texts = [
        hl7("ADT^A04^ADT_A01", "20240101080000", PID),
        hl7("ADT^A40^ADT_A39", "20240101090000", PID),
        hl7("ADT^A08^ADT_A01", "20240101100000", PID.replace("DOE^JANE^Q", "DOE^JANET")),
    ]
    ids = [store_message(feed.engine, text.encode()) for text in texts]
    messages = [(message_id, Message.parse(text), RECEIVED) for message_id, text in zip(ids, texts)]

    registered, refused, updated, again, unknown = ingestor.apply_many(
        [*messages, messages[0], (424242, messages[2][1], RECEIVED)]
    )

    patient_id = registered.patient_id  # not 1 on PostgreSQL: the rolled-back attempt used up ids
    assert (registered.detail, updated.detail) == (f"patient {patient_id}", f"patient {patient_id}")
    assert isinstance(refused, RecordError) and "no MRG" in str(refused)
    assert again == IngestResult(
        ids[0], "ADT^A04", patient_id, True, f"patient {patient_id}", already_applied=True
    )
    assert isinstance(unknown, StoreError)
    assert [row[0] for row in dump(feed.engine)["record_applied_messages"]] == [ids[0], ids[2]]
    assert [name["given"] for name in get_patient(feed.engine, patient_id)["names"]] == ["JANET"]


def test_a_refused_mark_of_a_message_that_records_nothing_fails_alone(feed, ingestor):
    """An unrecorded event under an unknown id fails alone when its applied row is refused; others apply."""
    texts = [
        hl7("ADT^A04^ADT_A01", "20240101080000", PID),
        hl7("ADT^A08^ADT_A01", "20240101100000", PID.replace("DOE^JANE^Q", "DOE^JANET")),
    ]
    ids = [store_message(feed.engine, text.encode()) for text in texts]
    registered, unknown, updated = ingestor.apply_many(
        [
            (ids[0], Message.parse(texts[0]), RECEIVED),
            (424242, Message.parse(hl7("ADT^A60^ADT_A60", "20240101090000", PID)), RECEIVED),
            (ids[1], Message.parse(texts[1]), RECEIVED),
        ]
    )
    assert isinstance(unknown, StoreError)
    assert (registered.applied, updated.applied) == (True, True)
    assert [row[0] for row in dump(feed.engine)["record_applied_messages"]] == ids
    assert [name["given"] for name in get_patient(feed.engine, registered.patient_id)["names"]] == ["JANET"]


def test_a_batch_of_any_size_applies(engine, ingestor):
    """1,100 messages in one apply_many (ids for several statements) apply, then are already applied."""
    text = hl7("ADT^A60^ADT_A60", "20240101080000", PID)  # an event the record does not keep: cheap to apply
    messages = [
        (message_id, Message.parse(text), RECEIVED)
        for message_id in store_messages(engine, [text.encode()] * 1_100)
    ]
    assert [result.already_applied for result in ingestor.apply_many(messages)] == [False] * 1_100
    assert [result.already_applied for result in ingestor.apply_many(messages)] == [True] * 1_100


def test_a_batch_leaves_the_rows_one_message_at_a_time_leaves(tmp_path):
    """Journey, corpus, refusals and repeats in one apply_many make the rows (history too) of one by one."""
    texts = [(SAMPLES / name).read_bytes().decode() for name in JOURNEY] + [
        text for _, text in corpus_messages()
    ]
    texts[5:5] = [
        hl7("ADT^A40^ADT_A39", "20240101090000", PID),
        hl7("ADT^A04^ADT_A01", "20240101090000", "PID|1"),
    ]
    dumps = []
    for mode in ("one by one", "together"):
        engine = create_engine_for(f"sqlite:///{tmp_path / mode / 'record.db'}")
        upgrade(engine)
        ingestor = RecordIngestor(engine, clock=lambda: NOW)
        messages = [
            (store_message(engine, text.encode("utf-8", "surrogateescape")), Message.parse(text), RECEIVED)
            for text in texts
        ]
        messages += messages[:12]
        if mode == "together":
            results = ingestor.apply_many(messages)
        else:
            results = []
            for message in messages:
                try:
                    results.append(ingestor.apply(*message))
                except RecordError as error:
                    results.append(error)
        dumps.append(
            (
                [result if isinstance(result, IngestResult) else str(result) for result in results],
                dump(engine),
            )
        )
        engine.dispose()
    assert dumps[0] == dumps[1]
    assert sum(isinstance(result, str) for result in dumps[0][0]) == 4  # the two refused, each twice


def test_every_corpus_message_applies(engine, ingestor):
    """Every ADT/SIU/ORU/DFT corpus message (alone or in a batch) applies without error, in manifest order."""
    results = {}
    for name, text in corpus_messages():
        message_id = store_message(engine, text.encode("utf-8", "surrogateescape"))
        results[name] = ingestor.apply(message_id, Message.parse(text), RECEIVED)
    assert len(results) >= 90
    applied = [name for name, result in results.items() if result.applied]
    assert len(applied) >= 80
    assert results["adt/fhirconv_adt_a47_01.hl7#1"].detail == "ADT^A47 is not recorded"
