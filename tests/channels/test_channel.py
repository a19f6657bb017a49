"""engine.channels.channel: a channel's order (at intake or by a pass), recovery, after_processing waiters.

On a task.Clock with a fake store: every store call answers at once unless the store is paused.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.channels.channel import PASS_SIZE, Channel
from engine.channels.dispatcher import GATHER_SECONDS, RetryPolicy
from engine.channels.pipeline import DestinationStages, Pipeline
from engine.channels.spec import ChannelConfig
from engine.model import NewMessage, Outcome, Status
from tests.fakes.channels import FakeStore, GatedDestination, message_row

ADT = "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C{n:04d}|P|2.5.1\rPID|1||{n}^^^PMS^MR\r"


def adt(n: int) -> str:
    return ADT.format(n=n)


def _message(n: int) -> NewMessage:
    return message_row(n, adt(n).encode())


def _channel(store, reactor, journals, *, destinations=(), **config) -> Channel:
    """Channel adt (after_store unless told otherwise) with these (destination, retry) pairs."""
    spec = ChannelConfig(name="adt", source="main", accept={"types": ["*"]}, **config)
    pipeline = Pipeline(destinations=[DestinationStages(d.name) for d, _ in destinations])
    return Channel(
        spec, pipeline=pipeline, destinations=destinations, store=store, journals=journals, reactor=reactor
    )


def _statuses(store: FakeStore, message_ids) -> list[str]:
    return [store.statuses[i] for i in message_ids]


def test_the_channel_finds_messages_below_what_it_already_read(journals):
    """A message back to RECEIVED with a lower id is processed on the next pass.

    That is a reprocess, or on PostgreSQL a commit that came late.
    """
    store, reactor = FakeStore(), Clock()
    channel = _channel(store, reactor, journals)
    ids = store.add([_message(n) for n in range(1, 4)]).result
    channel.start()
    assert _statuses(store, ids) == ["TRANSFORMED"] * 3
    assert store.reprocess([ids[0]]).result == 1
    channel.notify()
    assert _statuses(store, ids) == ["TRANSFORMED"] * 3
    assert store.calls.count("record_processing") == 2
    channel.stop()


def test_a_pass_records_its_results_a_bounded_number_at_a_time(journals):
    """A backlog is processed and recorded PASS_SIZE messages at a time, in id order, all of it.

    Each write of results is one transaction on the store (other processes' intake commits wait
    behind it) and processing them one turn of the reactor: a backlog must not make either long.
    """
    store, reactor = FakeStore(), Clock()
    channel = _channel(store, reactor, journals)
    backlog = 2 * PASS_SIZE + 7
    ids = store.add([_message(n) for n in range(1, backlog + 1)]).result
    recorded: list[list[int]] = []
    record = store.record_processing

    def recording(results, lease=None):
        recorded.append([result.message_id for result in results])
        return record(results, lease)

    store.record_processing = recording
    channel.start()
    assert _statuses(store, ids) == ["TRANSFORMED"] * backlog
    assert [len(run) for run in recorded] == [PASS_SIZE, PASS_SIZE, 7]
    assert [i for run in recorded for i in run] == ids
    channel.stop()


def test_a_successor_takes_on_what_its_predecessor_held_when_a_reload_replaced_it(journals):
    """A message held by a channel that a reload replaced is tracked and processed by the successor.

    Until the successor's pass has processed it, the successor processes nothing at intake (order).
    """
    store, reactor = FakeStore(), Clock()
    before = _channel(store, reactor, journals)
    before.start()
    receipt = before.receive(adt(1), "utf-8", "C0001")
    assert receipt.result is not None  # caught up: processed at intake
    held = before.hold()  # a message on its way to the store as RECEIVED
    before.stop()
    after = _channel(store, reactor, journals)
    after.start()
    assert after.processes_at_intake
    [held_id] = store.add([_message(2)]).result
    store.pause()  # the successor's pass waits for the store
    after.stored([(held, held_id)])
    assert not after.processes_at_intake  # message 2 waits for the pass: nothing overtakes it
    store.resume()
    assert _statuses(store, [held_id]) == ["TRANSFORMED"]
    assert after.processes_at_intake


def test_processing_at_intake_waits_until_nothing_of_the_channel_waits_for_a_pass(journals):
    """receive holds messages until caught up, and while a held one is unstored or unprocessed."""
    store, reactor = FakeStore(), Clock()
    channel = _channel(store, reactor, journals)
    left_from_before = store.add([_message(1)]).result
    assert not channel.processes_at_intake
    second = channel.receive(adt(2), "utf-8", "C0002")
    assert second.result is None  # not caught up: message 1 waits for a pass
    third = channel.receive(adt(3), "utf-8", "C0003")
    assert third.result is None  # message 2 is on its way to the store
    channel.dropped(third)  # message 3 could not be stored (its sender is told AR)
    [second_id] = store.add([_message(2)]).result
    store.pause()  # the pass that stored() starts waits for the store
    channel.stored([(second, second_id)])
    fourth = channel.receive(adt(4), "utf-8", "C0004")
    assert fourth.result is None  # message 2 is stored, not processed yet
    channel.dropped(fourth)
    store.resume()
    channel.start()
    assert _statuses(store, [*left_from_before, second_id]) == ["TRANSFORMED"] * 2
    assert channel.processes_at_intake
    result = channel.receive(adt(5), "utf-8", "C0005").result
    assert result is not None and result.status == Status.TRANSFORMED
    channel.stop()
    assert not channel.processes_at_intake
    assert channel.receive(adt(6), "utf-8", "C0006").result is None  # stopped


@pytest.mark.parametrize(
    "config",
    [{"respond": "after_processing"}, {"duplicate_window_seconds": 60}],
    ids=["after_processing", "duplicate detection"],
)
def test_a_channel_that_answers_after_processing_or_checks_duplicates_never_processes_at_intake(
    config, journals
):
    """Held always: the answer follows a pass (after_processing), a duplicate is known only after lookup."""
    store, reactor = FakeStore(), Clock()
    channel = _channel(store, reactor, journals, **config)
    channel.start()
    assert not channel.processes_at_intake
    assert channel.receive(adt(1), "utf-8", "C0001").result is None


def test_a_held_message_wakes_a_pass_and_a_processed_one_the_dispatchers(journals):
    """stored() starts a pass for messages stored RECEIVED, dispatcher rounds for those stored processed."""
    store, reactor = FakeStore(), Clock()
    lab = GatedDestination()
    channel = _channel(store, reactor, journals, destinations=[(lab, RetryPolicy())])
    channel.start()
    receipt = channel.receive(adt(1), "utf-8", "C0001")
    assert receipt.result is not None and receipt.result.status == Status.QUEUED
    row = _message(1)
    row.status, row.deliveries = receipt.result.status, receipt.result.deliveries
    [message_id] = store.add([row]).result
    channel.stored([(receipt, message_id)])
    assert lab.sent == ["C0001"]  # the dispatcher was woken
    lab.answer()
    held = channel.hold()
    [held_id] = store.add([_message(2)]).result
    assert store.statuses[held_id] == "RECEIVED"
    channel.stored([(held, held_id)])
    assert store.statuses[held_id] == "QUEUED"  # a pass processed it
    reactor.advance(GATHER_SECONDS)  # the dispatcher's last round was short: it gathers first
    assert lab.sent == ["C0001", "C0002"]
    channel.stop()


def _waiting(reactor: Clock, journals, timeout: float) -> tuple[Channel, GatedDestination, defer.Deferred]:
    """An after_processing channel with a gated destination, and the waiter of its message 1 (stored)."""
    store = FakeStore()
    lab = GatedDestination()
    channel = _channel(
        store, reactor, journals, destinations=[(lab, RetryPolicy())], respond="after_processing"
    )
    channel.start()
    receipt = channel.receive(adt(1), "utf-8", "C0001")
    [message_id] = store.add([_message(1)]).result
    store.pause()  # as with a real store, the intake waits for the outcome before the pass reads
    channel.stored([(receipt, message_id)])
    waiter = channel.wait_for(message_id, timeout=timeout)
    store.resume()
    return channel, lab, waiter


def test_a_sender_waiting_after_processing_gets_the_final_outcome_of_the_deliveries(journals):
    """wait_for fires with (status, reason, results) once every delivery of the message settled."""
    reactor = Clock()
    channel, lab, waiter = _waiting(reactor, journals, timeout=30)
    assert lab.sent == ["C0001"] and not waiter.called
    lab.answer(Outcome.ERROR)
    status, reason, results = waiter.result
    assert (status, reason, [r.outcome for r in results]) == (Status.ERROR, "ERROR", [Outcome.ERROR])
    reactor.advance(30)  # the timeout was cancelled: the answer stands
    assert waiter.result[0] == Status.ERROR
    channel.stop()


def test_a_waiter_times_out_and_the_channel_stops_waiting(journals):
    """wait_for errbacks with TimeoutError after its timeout; the delivery settling later answers nobody."""
    reactor = Clock()
    channel, lab, waiter = _waiting(reactor, journals, timeout=5)
    failures = []
    waiter.addErrback(failures.append)
    reactor.advance(4.9)
    assert not failures
    reactor.advance(0.1)
    assert failures and failures[0].check(defer.TimeoutError)
    lab.answer()  # settles after the sender was answered: nothing left waiting for it
    channel.stop()
