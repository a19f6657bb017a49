"""engine.store.processing: the rows a message's processing leaves, the same from a runner or at intake."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.model import NewDelivery, ProcessingResult, SourceFile, Status
from engine.store.cipher import CLEAR
from engine.store.messages import MessageRepository
from engine.store.processing import DELIVERY_COLUMNS, EVENT_COLUMNS, delivery_row, event_row, intake_rows
from engine.store.schema import deliveries, message_events
from tests.fakes.messages import T0


def _processing_trail(repository: MessageRepository, message_id: int) -> tuple:
    """What processing left of a message, without ids and times: status, error, content, rows, events."""
    stored = repository.get(message_id)
    timeless = [
        c
        for c in deliveries.c
        if c.name not in ("id", "message_id", "created_at", "updated_at", "next_attempt_at")
    ]
    with repository.engine.connect() as connection:
        rows = connection.execute(
            sa.select(*timeless).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
        ).all()
    return (
        stored.status,
        stored.error,
        stored.transformed,
        [tuple(row) for row in rows],
        [(e.status, e.detail, e.destination) for e in stored.events],
    )


@pytest.mark.parametrize(
    "result",
    [
        ProcessingResult(
            0,
            Status.QUEUED,
            transformed=b"MSH|changed\r",
            deliveries=(
                NewDelivery("emr", Status.QUEUED, "C1", b"MSH|to emr\r"),
                NewDelivery("archive", Status.FILTERED, "C1", None, "PID-8 is U, not one of M, F"),
                NewDelivery(
                    "lab",
                    Status.ERROR,
                    "C1",
                    None,
                    "channels[0].destinations[2].transforms[0]: no such table row",
                ),
            ),
        ),
        ProcessingResult(0, Status.FILTERED, reason="channels[0].filters[0]: MSH-9.1 is ORU"),
        ProcessingResult(0, Status.ERROR, reason="channels[0].transforms[0]: PV1-3.1 7W not in wards"),
        ProcessingResult(0, Status.TRANSFORMED, transformed=b"MSH|changed\r"),
    ],
    ids=["queued", "filtered", "error", "transformed"],
)
def test_a_message_processed_at_intake_is_stored_as_a_pass_records_it(
    repository, queues, make_message, result
):
    """insert() of a message with its processing leaves what insert() then record_processing() leave."""
    [passed] = repository.insert([make_message(1)])
    queues.record_processing([dataclasses.replace(result, message_id=passed)])
    at_intake = make_message(
        1,
        status=result.status,
        error=result.reason,
        transformed=result.transformed,
        deliveries=result.deliveries,
    )
    [inline] = repository.insert([at_intake])
    assert _processing_trail(repository, inline) == _processing_trail(repository, passed)
    assert _processing_trail(repository, inline)[0] == result.status


def test_a_group_whose_deliveries_fail_stores_none_of_its_messages(repository, make_message):
    """A deliveries row refused (no control id) rolls back the group's messages too; the next group stores."""
    refused = NewDelivery("emr", Status.QUEUED, None, b"MSH|to emr\r")
    processed = make_message(2, status=Status.QUEUED, error="", deliveries=(refused,))
    with pytest.raises(StoreError):
        repository.insert([make_message(1), processed])
    assert repository.count() == 0
    [stored] = repository.insert([make_message(3)])
    assert repository.count() == 1 and repository.get(stored) is not None


def test_intake_rows_are_a_processed_messages_deliveries_and_events_in_order(make_message):
    """intake_rows: processed messages' deliveries, then events (the message's first), fitted, by position."""
    emr = NewDelivery("emr", Status.QUEUED, "C1", b"MSH|to emr\r")
    lab = NewDelivery("lab", Status.FILTERED, "C1\x00" + "9" * 300, None, "no\x00 lab")
    processed = make_message(1, status=Status.QUEUED, error="", deliveries=(emr, lab))
    filtered = make_message(3, status=Status.FILTERED, error="channels[0].filters[0]: no", deliveries=())
    built, built_events = intake_rows([processed, make_message(2), filtered], T0, CLEAR)
    rows = [dict(zip(DELIVERY_COLUMNS, row, strict=True)) for row in built]
    events = [dict(zip(EVENT_COLUMNS, event, strict=True)) for event in built_events]
    assert [(r["message_id"], r["destination"], r["status"], r["control_id"], r["reason"]) for r in rows] == [
        (1, "emr", Status.QUEUED, "C1", ""),
        (1, "lab", Status.FILTERED, "C1" + "9" * 197, "no lab"),
    ]
    assert all((r["attempts"], r["created_at"], r["next_attempt_at"]) == (0, T0, T0) for r in rows)
    assert [(e["message_id"], e["status"], e["detail"], e["destination"]) for e in events] == [
        (1, Status.QUEUED, "", None),
        (1, Status.QUEUED, "", "emr"),
        (1, Status.FILTERED, "no lab", "lab"),
        (3, Status.FILTERED, "channels[0].filters[0]: no", None),
    ]


def _group(make_message) -> list:
    """Processed messages of two channels, findings, NULs, long and non-ASCII text; one not processed."""
    long_reason = "über\x00 " + "r" * 300
    emr = NewDelivery("emr", Status.QUEUED, "C1", b"MSH|to emr\r")
    lab = NewDelivery("lab\x00" + "l" * 80, Status.FILTERED, "C1\x00" + "9" * 300, None, long_reason)
    failed = NewDelivery("lab", Status.ERROR, "C2", None, "channels[0].destinations[1]: no row")
    return [
        make_message(1, status=Status.QUEUED, error="", deliveries=(emr, lab), findings=("MSH-7 missing",)),
        make_message(2),
        make_message(3, channel="orders", status=Status.QUEUED, error="", deliveries=(failed, emr)),
        make_message(4, status=Status.FILTERED, error="channels[0].filters[0]: no", deliveries=()),
        make_message(5, status=Status.QUEUED, error="", deliveries=(emr, lab), findings=("a", "b")),
    ]


def _rows_naming(engine: sa.Engine, table: sa.Table, message_ids: list[int]) -> list[tuple]:
    """The rows of ``table`` naming these messages, in id order, without ids, each message by position."""
    position = {message_id: n for n, message_id in enumerate(message_ids)}
    columns = [c for c in table.c if c.name != "id"]
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(*columns).where(table.c.message_id.in_(message_ids)).order_by(table.c.id)
        ).all()
    return [(position[row.message_id], *row[1:]) for row in found]


@pytest.mark.parametrize(
    "source_file", [None, SourceFile("/in/a.hl7", "a" * 64, 9, 1)], ids=["alone", "file"]
)
def test_rows_stored_at_intake_are_those_delivery_row_and_event_row_give(engine, make_message, source_file):
    """A group processed at intake stores, column for column, the rows delivery_row and event_row make."""
    repository = MessageRepository(engine, clock=lambda: T0)
    group = _group(make_message)
    at_intake = repository.insert(group, source_file)
    plain = repository.insert([dataclasses.replace(m, deliveries=None, findings=()) for m in group])
    rows, events = [], []
    for message, message_id in zip(group, plain):
        events += [event_row(message_id, T0, message.status, finding) for finding in message.findings]
        if message.deliveries is None:
            continue
        events.append(event_row(message_id, T0, message.status, message.error))
        for d in message.deliveries:
            rows.append(
                delivery_row(
                    message_id,
                    message.channel,
                    d.destination,
                    d.status,
                    d.control_id,
                    d.payload,
                    d.reason,
                    T0,
                )
            )
            events.append(event_row(message_id, T0, d.status, d.reason, d.destination))
    with engine.begin() as connection:
        connection.execute(sa.insert(deliveries), rows)
        connection.execute(sa.insert(message_events), events)
    for table in (deliveries, message_events):
        stored = _rows_naming(engine, table, at_intake)
        assert stored == _rows_naming(engine, table, plain)
        assert len(stored) == (6 if table is deliveries else 13)
