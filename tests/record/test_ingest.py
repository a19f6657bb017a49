"""engine/record/ingest.py: its transactions (apply, apply_many, unmerge), idempotency, refusals, corpus."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import RecordError, StoreError
from engine.hl7.message import Message
from engine.record import schema
from engine.record.ingest import IngestResult, RecordIngestor
from engine.record.operations import Operator, RecordOperator
from engine.record.query import get_patient
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.record import (
    JOURNEY,
    NOW,
    PID,
    PV1,
    RECEIVED,
    SAMPLES,
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

    operator = RecordOperator(feed.engine, clock=lambda: NOW)
    by = Operator("ops", "cli")
    moved = operator.unmerge(1, reason="wrong patient", by=by)

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
        operator.unmerge(1, reason="again", by=by)
    with pytest.raises(RecordError, match="no merge 99"):
        operator.unmerge(99, reason="none", by=by)


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
    assert results["adt/fhirconv_adt_a47_01.hl7#1"].applied
