"""engine.record.destination: deliveries applied on the store's writer thread, outcomes SENT / ERROR / RETRY."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import pytest_twisted

from engine.channels.stages import Delivery, DeliveryResult, Outcome
from engine.record.destination import RecordDestination
from engine.record.query import get_patient
from engine.store.messages import MessageStore, NewMessage
from engine.store.schema import Status
from tests.record.conftest import JOURNEY, SAMPLES
from tests.store.conftest import WriteLock

QUEUED = datetime(2024, 4, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(record_url):
    """A started MessageStore on the test database (global reactor), stopped afterwards."""
    from twisted.internet import reactor

    store = MessageStore(record_url, reactor=reactor, lock_timeout=0.3)
    store.start()
    yield store
    pytest_twisted.blockon(store.stop())


@pytest.fixture
def destination(store) -> RecordDestination:
    """A RecordDestination on the store."""
    from twisted.internet import reactor

    return RecordDestination("record", store=store, reactor=reactor)


async def deliver(store, destination: RecordDestination, payload: bytes) -> DeliveryResult:
    """Store ``payload`` as a received message, then send it to the destination as its first delivery."""
    empty = dict.fromkeys(("sending_application", "sending_facility", "receiving_application", "receiving_facility", "message_code",
                           "trigger_event", "message_structure", "control_id", "version", "processing_id", "charset"), "")
    (message_id,) = await store.add([NewMessage(raw=payload, received_at=QUEUED, listener="mllp", peer="127.0.0.1", status=Status.RECEIVED,
                                                channel="record", ack_code="AA", ack=None, **empty)])
    delivery = Delivery(delivery_id=message_id, message_id=message_id, channel="record", destination="record", control_id="",
                        payload=payload, attempt=1, queued_at=QUEUED)
    return await destination.send(delivery)


@pytest_twisted.ensureDeferred
async def test_journey_through_the_destination(store, destination):
    """Every journey message is SENT with its patient as the reason, and the record is built."""
    reasons = [(await deliver(store, destination, (SAMPLES / name).read_bytes())).reason for name in JOURNEY]
    assert reasons[:3] == ["patient 1", "patient 1", "patient 1"]
    assert reasons[-1] == "patient 1; merge 1: patient 2 merged"
    patient = await store.read(get_patient, store.repository.engine, 1)
    assert [i["value"] for i in patient["identifiers"]] == ["PMS-100234", "MRN-556677", "L-9981", "PMS-100299"]


@pytest_twisted.ensureDeferred
async def test_unknown_event_is_sent_with_the_reason(store, destination):
    """An event the record does not keep is taken (SENT) and says why nothing was recorded."""
    result = await deliver(store, destination, b"MSH|^~\\&|PMS|C|HUB|R|20240101||ADT^A60|1|P|2.5.1\rPID|1||P-1^^^PMS\r")
    assert result == DeliveryResult(Outcome.SENT, reason="nothing recorded: ADT^A60 is not recorded")


@pytest_twisted.ensureDeferred
async def test_content_that_cannot_be_applied_is_an_error(store, destination):
    """A merge without MRG, and bytes that are not HL7, end in ERROR: resending them unchanged would fail again."""
    merge = await deliver(store, destination, b"MSH|^~\\&|PMS|C|HUB|R|20240101||ADT^A40^ADT_A39|1|P|2.5.1\rPID|1||P-1^^^PMS\r")
    garbage = await deliver(store, destination, b"not an HL7 message")
    assert merge == DeliveryResult(Outcome.ERROR, reason="cannot be applied to the patient record: ADT^A40 has no MRG segment: nothing says which patient to merge")
    assert garbage.outcome is Outcome.ERROR
    assert garbage.reason.startswith("the payload is not a readable HL7 message")


@pytest_twisted.ensureDeferred
async def test_locked_database_is_a_retry(store, destination, record_url):
    """While another connection holds the write lock, the delivery comes back RETRY; once released it is SENT."""
    payload = (SAMPLES / JOURNEY[0]).read_bytes()
    empty = dict.fromkeys(("sending_application", "sending_facility", "receiving_application", "receiving_facility", "message_code",
                           "trigger_event", "message_structure", "control_id", "version", "processing_id", "charset"), "")
    (message_id,) = await store.add([NewMessage(raw=payload, received_at=QUEUED, listener="mllp", peer="p", status=Status.RECEIVED,
                                                channel="record", ack_code="AA", ack=None, **empty)])
    delivery = Delivery(message_id, message_id, "record", "record", "", payload, 1, QUEUED)
    lock = WriteLock(record_url)
    lock.hold()
    try:
        locked = await destination.send(delivery)
    finally:
        lock.release()
    assert locked.outcome is Outcome.RETRY
    again = await destination.send(delivery)
    assert again.outcome is Outcome.SENT
    assert again.reason.startswith("patient ")  # PostgreSQL may have used up id 1 in the rolled-back attempt


@pytest_twisted.ensureDeferred
async def test_stopped_store_is_a_retry(store, destination):
    """A delivery after the store stopped comes back RETRY (the engine is shutting down), never an errback."""
    await store.stop()
    result = await destination.send(Delivery(1, 1, "record", "record", "", (SAMPLES / JOURNEY[0]).read_bytes(), 1, QUEUED))
    assert result.outcome is Outcome.RETRY
