"""engine.channels.dispatcher with on_error: halt and operator pauses (task.Clock, in-memory store)."""

from __future__ import annotations

from datetime import timedelta

from twisted.internet import defer
from twisted.internet.task import Clock

from engine.channels.dispatcher import Dispatcher, RetryPolicy
from engine.model import NewDelivery, Outcome, Status
from engine.store.reads import Pause
from tests.fakes.channels import FakeStore, ScriptedDestination, message_row
from tests.fakes.messages import RECEIVED_AT


class Halts:
    """Where a halt queue writes its pause: a list (the store's side: tests/store/test_controls.py)."""

    def __init__(self):
        self.written: list[tuple[str, str, int, str]] = []

    def halt(self, channel: str, destination: str, delivery_id: int, reason: str) -> defer.Deferred:
        self.written.append((channel, destination, delivery_id, reason))
        return defer.succeed(True)


def _setup(journals, *outcomes: Outcome, on_error: str = "halt", controls=None):
    store, reactor = FakeStore(), Clock()
    rows = [
        message_row(n, deliveries=(NewDelivery("lab", Status.QUEUED, f"C{n:04d}", b"MSH|"),))
        for n in range(1, 5)
    ]
    store.add(rows)
    destination = ScriptedDestination(*outcomes)
    dispatcher = Dispatcher(
        "adt",
        destination,
        RetryPolicy(jitter=0, on_error=on_error),
        store=store,
        journal=journals.journal("adt", "lab"),
        reactor=reactor,
        clock=lambda: RECEIVED_AT + timedelta(seconds=reactor.seconds()),
        on_settled=lambda delivery, result: None,
        observer=lambda *_: None,
        controls=controls,
    )
    return store, reactor, destination, dispatcher


def test_halt_stops_the_queue_at_its_first_error_until_released(journals):
    """An ERROR on the 2nd message halts the queue (pause written); nothing behind it goes until released."""
    halts = Halts()
    store, reactor, destination, dispatcher = _setup(journals, Outcome.SENT, Outcome.ERROR, controls=halts)
    dispatcher.start()
    reactor.advance(1)
    dispatcher.set_paused(None, read_at=reactor.seconds())  # the first read: not paused
    halted_at = reactor.seconds()
    reactor.advance(60)
    assert destination.sent == ["C0001", "C0002"]
    assert dispatcher.held
    [(channel, name, delivery_id, reason)] = halts.written
    assert (channel, name, reason) == ("adt", "lab", "ERROR")
    assert store.delivery_states()[:2] == [("SENT", 1), ("ERROR", 1)]

    dispatcher.set_paused(None, read_at=halted_at - 0.5)  # a read that began before the halt
    assert dispatcher.held
    dispatcher.set_paused(None, read_at=reactor.seconds())  # the pause is gone: an operator resumed
    reactor.advance(60)
    assert destination.sent == ["C0001", "C0002", "C0003", "C0004"]
    dispatcher.stop()


def test_a_paused_dispatcher_sends_nothing_and_block_does_not_halt(journals):
    """Given controls, a dispatcher starts held until told; on_error: block writes no pause on an ERROR."""
    halts = Halts()
    store, reactor, destination, dispatcher = _setup(
        journals, Outcome.ERROR, on_error="block", controls=halts
    )
    dispatcher.start()
    reactor.advance(60)
    assert destination.sent == [] and dispatcher.held  # held until the first read of the pauses
    pause = Pause("adt", "lab", RECEIVED_AT, "alice", "", None)
    dispatcher.set_paused(pause, read_at=reactor.seconds())
    reactor.advance(60)
    assert destination.sent == []
    dispatcher.set_paused(None, read_at=reactor.seconds())
    reactor.advance(60)
    assert destination.sent == ["C0001", "C0002", "C0003", "C0004"] and halts.written == []
    dispatcher.stop()
