"""engine.channels.destinations.handoff: a message stored RECEIVED for another channel, in its turn."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.task import Clock

from engine.channels.channel import Channel
from engine.channels.destinations.handoff import ChannelHandoff
from engine.channels.pipeline import Pipeline
from engine.channels.spec import ChannelConfig
from engine.model import Delivery, DeliveryResult, Outcome, Status
from tests.fakes.channels import FakeStore

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PAYLOAD = b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C0001|P|2.5.1\rPID|1||7^^^PMS^MR\r"


def delivery(payload: bytes = PAYLOAD) -> Delivery:
    return Delivery(11, 3, "adt", "to-lab", "C0001", payload, 1)


def handoff(store, channels) -> ChannelHandoff:
    return ChannelHandoff(
        "to-lab", "lab", source_channel="adt", store=store, channels=channels, clock=lambda: NOW
    )


def target(store, reactor, journals) -> Channel:
    config = ChannelConfig(name="lab", source="main", accept={"types": ["*"]})
    return Channel(
        config, pipeline=Pipeline(), destinations=(), store=store, journals=journals, reactor=reactor
    )


def test_the_message_is_stored_received_for_the_target_channel_and_sent_once_committed():
    """The payload is stored RECEIVED for the target, from listener channel:<source>; SENT names it."""
    store = FakeStore()
    result = handoff(store, {}).send(delivery()).result
    assert result == DeliveryResult(Outcome.SENT, reason="stored as message 1 of channel lab")
    row = store.messages[1]
    assert (row.raw, row.channel, row.status, row.listener, row.peer, row.received_at) == (
        PAYLOAD,
        "lab",
        Status.RECEIVED,
        "channel:adt",
        "channel:adt/to-lab",
        NOW,
    )
    assert (row.control_id, row.message_code, row.trigger_event, row.sending_application) == (
        "C0001",
        "ADT",
        "A04",
        "PMS",
    )


def test_the_target_channel_takes_the_message_in_its_turn(journals):
    """While the handed-over message is on its way or waits for a pass, the target holds its intake."""
    store, reactor = FakeStore(), Clock()
    lab = target(store, reactor, journals)
    lab.start()
    assert lab.processes_at_intake
    store.pause()
    sending = handoff(store, {"lab": lab}).send(delivery())
    assert not lab.processes_at_intake  # on its way to the store
    store.resume()
    assert sending.result.outcome == Outcome.SENT
    assert store.statuses[1] == Status.TRANSFORMED  # the target's pass processed it
    assert lab.processes_at_intake


def test_a_store_failure_is_retry_and_the_target_is_told(journals):
    """When the store fails the delivery is RETRY, and the target no longer waits for that message."""
    store, reactor = FakeStore(), Clock()
    lab = target(store, reactor, journals)
    lab.start()
    store.failing = True
    result = handoff(store, {"lab": lab}).send(delivery()).result
    assert result.outcome == Outcome.RETRY and "store unavailable" in result.reason
    assert lab.processes_at_intake


def test_a_payload_without_a_readable_header_is_an_error():
    """A payload whose MSH cannot be read cannot be routed to the target: ERROR, nothing stored."""
    store = FakeStore()
    result = handoff(store, {}).send(delivery(b"not HL7")).result
    assert result.outcome == Outcome.ERROR and result.reason.startswith("cannot hand over to channel lab")
    assert store.messages == {}
