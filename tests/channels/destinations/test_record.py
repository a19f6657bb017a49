"""engine.channels.destinations.record: deliveries applied on the store's writer thread, SENT/ERROR/RETRY."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from engine.channels.destinations.record import (
    CHUNK_MESSAGES,
    CHUNK_SECONDS,
    MAX_CHUNK_MESSAGES,
    MIN_CHUNK_MESSAGES,
    SHARED_CHUNK_SECONDS,
    RecordDestination,
    next_chunk,
)
from engine.model import Delivery, DeliveryResult, Outcome
from engine.record.query import get_patient
from tests.fakes.messages import new_message
from tests.fakes.record import JOURNEY, SAMPLES
from tests.fakes.store import WriteLock

QUEUED = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(open_store):
    """A started MessageStore on the test database (SQLite and PostgreSQL) that waits briefly for locks."""
    return open_store(lock_timeout=0.3)


@pytest.fixture
def destination(store) -> RecordDestination:
    """A RecordDestination on the store."""
    from twisted.internet import reactor

    return RecordDestination("record", store=store, reactor=reactor)


async def queued(store, *payloads: bytes) -> list[Delivery]:
    """Store each payload as a received message; its first delivery to the record."""
    message_ids = await store.add(
        [new_message(payload, received_at=QUEUED, channel="record") for payload in payloads]
    )
    return [
        Delivery(
            delivery_id=message_id,
            message_id=message_id,
            channel="record",
            destination="record",
            control_id="",
            payload=payload,
            attempt=1,
            queued_at=QUEUED,
        )
        for message_id, payload in zip(message_ids, payloads)
    ]


async def deliver(store, destination: RecordDestination, payload: bytes) -> DeliveryResult:
    """Store ``payload`` as a received message, then send it to the destination as its first delivery."""
    (delivery,) = await queued(store, payload)
    return await destination.send(delivery)


@pytest_twisted.ensureDeferred
async def test_journey_through_the_destination(store, destination):
    """Every journey message is SENT with its patient as the reason, and the record is built."""
    reasons = [(await deliver(store, destination, (SAMPLES / name).read_bytes())).reason for name in JOURNEY]
    assert reasons[:3] == ["patient 1", "patient 1", "patient 1"]
    assert reasons[-1] == "patient 1; merge 1: patient 2 merged"
    patient = await store.read(get_patient, store.repository.engine, 1)
    assert [i["value"] for i in patient["identifiers"]] == [
        "PMS-100234",
        "MRN-556677",
        "L-9981",
        "PMS-100299",
    ]


@pytest_twisted.ensureDeferred
async def test_unknown_event_is_sent_with_the_reason(store, destination):
    """An event the record does not keep is taken (SENT) and says why nothing was recorded."""
    result = await deliver(
        store, destination, b"MSH|^~\\&|PMS|C|HUB|R|20240101||ADT^A60|1|P|2.5.1\rPID|1||P-1^^^PMS\r"
    )
    assert result == DeliveryResult(Outcome.SENT, reason="nothing recorded: ADT^A60 is not recorded")


@pytest_twisted.ensureDeferred
async def test_content_that_cannot_be_applied_is_an_error(store, destination):
    """A merge without MRG, and bytes that are not HL7, end in ERROR.

    Resending them unchanged would fail again.
    """
    merge = await deliver(
        store, destination, b"MSH|^~\\&|PMS|C|HUB|R|20240101||ADT^A40^ADT_A39|1|P|2.5.1\rPID|1||P-1^^^PMS\r"
    )
    garbage = await deliver(store, destination, b"not an HL7 message")
    assert merge == DeliveryResult(
        Outcome.ERROR,
        reason="cannot be applied to the patient record:"
        " ADT^A40 has no MRG segment: nothing says which patient to merge",
    )
    assert garbage.outcome is Outcome.ERROR
    assert garbage.reason.startswith("the payload is not a readable HL7 message")


@pytest_twisted.ensureDeferred
async def test_a_batch_gets_one_result_per_message(store, destination):
    """send_run applies the readable messages in one writer call.

    An unreadable payload and a merge without MRG are errors of their own.
    """
    journey = [(SAMPLES / name).read_bytes() for name in JOURNEY]
    merge = b"MSH|^~\\&|PMS|C|HUB|R|20240101||ADT^A40^ADT_A39|1|P|2.5.1\rPID|1||P-1^^^PMS\r"
    deliveries = await queued(store, journey[0], b"not an HL7 message", merge, *journey[1:], journey[0])
    deliveries[-1] = deliveries[0]  # the first message delivered again (a resend) in the same batch

    results = await destination.send_run(deliveries, stop_at_failure=False)

    assert [result.outcome for result in results] == [
        Outcome.SENT,
        Outcome.ERROR,
        Outcome.ERROR,
        *[Outcome.SENT] * (len(journey) - 1),
        Outcome.SENT,
    ]
    assert results[1].reason.startswith("the payload is not a readable HL7 message")
    assert (
        results[2].reason == "cannot be applied to the patient record:"
        " ADT^A40 has no MRG segment: nothing says which patient to merge"
    )
    assert re.fullmatch(
        r"patient \d+; merge \d+: patient \d+ merged", results[-2].reason
    )  # ids: PostgreSQL's rolled-back attempt used some
    assert results[-1].reason == f"already applied: {results[0].reason}"


@pytest_twisted.ensureDeferred
async def test_locked_database_is_a_retry(store, destination, store_url):
    """While another connection holds the write lock, every delivery of a batch comes back RETRY.

    Once released they are SENT.
    """
    deliveries = await queued(store, *[(SAMPLES / name).read_bytes() for name in JOURNEY[:2]])
    lock = WriteLock(store_url, record=True)
    lock.hold()
    try:
        locked = await destination.send_run(deliveries, stop_at_failure=False)
    finally:
        lock.release()
    assert [result.outcome for result in locked] == [Outcome.RETRY, Outcome.RETRY]
    again = await destination.send_run(deliveries, stop_at_failure=False)
    assert [result.outcome for result in again] == [Outcome.SENT, Outcome.SENT]
    assert again[0].reason.startswith(
        "patient "
    )  # PostgreSQL may have used up id 1 in the rolled-back attempt


@pytest_twisted.ensureDeferred
async def test_stopped_store_is_a_retry(store, destination):
    """A delivery after the store stopped comes back RETRY (the engine is shutting down), never an errback."""
    await store.stop()
    result = await destination.send(
        Delivery(1, 1, "record", "record", "", (SAMPLES / JOURNEY[0]).read_bytes(), 1, QUEUED)
    )
    assert result.outcome is Outcome.RETRY


@pytest_twisted.ensureDeferred
async def test_a_run_is_applied_in_one_writer_call(store, destination):
    """send_run hands a short run to the store's record writer at once, not one call per message."""
    deliveries = await queued(store, *[(SAMPLES / name).read_bytes() for name in JOURNEY[:3]])
    calls = []
    write_record = store.write_record
    store.write_record = lambda function, *args: calls.append(function) or write_record(function, *args)
    results = await destination.send_run(deliveries, stop_at_failure=True)
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert len(calls) == 1


@pytest_twisted.ensureDeferred
async def test_a_message_received_while_a_chunk_applies_commits_without_waiting_for_it(store, destination):
    """The record's chunks run on a thread of their own (on SQLite the record file's, whose lock is
    not the store file's): a message received meanwhile commits at once. A run longer than the first
    chunk (CHUNK_MESSAGES) goes in several calls on SQLite, in order; PostgreSQL's is one."""
    payloads = [(SAMPLES / JOURNEY[n % 3]).read_bytes() for n in range(2 * CHUNK_MESSAGES + 1)]
    deliveries = await queued(store, *payloads)
    first_running, go_on = threading.Event(), threading.Event()
    threads = []  # the thread each chunk ran on
    write_record = store.write_record

    def watched(function, *args):
        def run(*args):
            threads.append(threading.current_thread().name)
            if len(threads) == 1:
                first_running.set()
                go_on.wait(10)
            return function(*args)

        return write_record(run, *args)

    store.write_record = watched
    applying = defer.ensureDeferred(destination.send_run(deliveries, stop_at_failure=True))
    await deferToThread(first_running.wait, 10)
    [received] = await store.add([new_message(payloads[0], received_at=QUEUED, channel="record")])
    committed_while_applying = not go_on.is_set()
    go_on.set()
    results = await applying
    assert committed_while_applying and received > len(payloads)
    assert [r.outcome for r in results] == [Outcome.SENT] * len(payloads)
    if store.repository.engine.dialect.name == "sqlite":
        assert len(threads) >= 2 and set(threads) == {"hl7engine-store-record"}
    else:
        assert threads == ["hl7engine-store-writer"]


def test_the_next_chunk_is_sized_to_take_chunk_seconds():
    """A chunk is sized from the last one's time, never more than twice it, within MIN..MAX_CHUNK_MESSAGES."""
    assert next_chunk(8, CHUNK_SECONDS) == 8
    assert next_chunk(16, 2 * CHUNK_SECONDS) == 8
    assert next_chunk(8, CHUNK_SECONDS / 3) == 16  # three times as many would fit: twice at most
    assert next_chunk(8, 100 * CHUNK_SECONDS) == MIN_CHUNK_MESSAGES
    assert next_chunk(MAX_CHUNK_MESSAGES, CHUNK_SECONDS / 10) == MAX_CHUNK_MESSAGES
    assert next_chunk(8, 0.0) == 16
    # Where the record shares the store's file, a chunk aims at SHARED_CHUNK_SECONDS instead.
    assert next_chunk(8, SHARED_CHUNK_SECONDS, SHARED_CHUNK_SECONDS) == 8
    assert next_chunk(16, SHARED_CHUNK_SECONDS, SHARED_CHUNK_SECONDS / 2) == 8
