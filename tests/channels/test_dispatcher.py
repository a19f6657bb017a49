"""engine.channels.dispatcher: retries, rounds, gathering, stopping, the journal (task.Clock, fake store)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.channels import dispatcher as dispatcher_module
from engine.channels.dispatcher import GATHER_BELOW, IN_DOUBT_REASON, Dispatcher, RetryPolicy
from engine.channels.passes import IDLE_POLL_SECONDS, STORE_RETRY_SECONDS
from engine.errors import StoreError
from engine.model import AttemptResult, Delivery, DeliveryResult, NewDelivery, Outcome, Status
from tests.fakes.channels import (
    FakeStore,
    GatedDestination,
    RunDestination,
    ScriptedDestination,
    journal_lines,
    message_row,
)
from tests.fakes.messages import RECEIVED_AT

T0 = RECEIVED_AT


def test_backoff_is_exponential_and_capped():
    """Without jitter the delay doubles from the initial value and stops at the cap."""
    policy = RetryPolicy(initial_seconds=1, max_seconds=10, multiplier=2, jitter=0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("attempt", [1, 3, 8])
def test_jitter_stays_within_its_fraction(attempt):
    """With jitter j every delay lies within base * (1 ± j), and the delays are not all equal."""
    policy = RetryPolicy(initial_seconds=1, max_seconds=100, multiplier=2, jitter=0.2)
    rng = random.Random(attempt)
    base = min(100, 2 ** (attempt - 1))
    delays = [policy.delay(attempt, rng) for _ in range(200)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert len(set(delays)) > 100


def test_giving_up_by_attempts_or_age():
    """A delivery is given up after max_attempts, or once older than max_age_seconds; None means never."""
    assert RetryPolicy(max_attempts=3).gives_up(3, 0)
    assert not RetryPolicy(max_attempts=3).gives_up(2, 0)
    assert RetryPolicy(max_attempts=None, max_age_seconds=60).gives_up(50, 61)
    assert not RetryPolicy(max_attempts=None, max_age_seconds=None).gives_up(10_000, 10**9)


def _queued(store: FakeStore, count: int) -> list[int]:
    """``count`` messages queued for the destination lab of channel adt, in order: their message ids."""
    rows = [
        message_row(n, deliveries=(NewDelivery("lab", Status.QUEUED, f"C{n:04d}", b"MSH|"),))
        for n in range(1, count + 1)
    ]
    return store.add(rows).result


def _dispatcher(journals, store, destination, reactor: Clock, urgent=lambda: False, **retry) -> Dispatcher:
    """A dispatcher of channel adt for ``destination``, its datetime clock following ``reactor``."""
    settled = []
    dispatcher = Dispatcher(
        "adt",
        destination,
        RetryPolicy(jitter=0, **retry),
        store=store,
        journal=journals.journal("adt", destination.name),
        reactor=reactor,
        clock=lambda: T0 + timedelta(seconds=reactor.seconds()),
        on_settled=lambda delivery, result: settled.append((delivery.control_id, result.outcome)),
        observer=lambda *_: None,
        urgent=urgent,
    )
    dispatcher.settled = settled
    return dispatcher


def _rounds(store: FakeStore) -> list[list[Outcome]]:
    return [[a.outcome for a in attempts] for attempts in store.attempts]


@pytest.mark.parametrize(
    ("kind", "rounds"), [("sends runs", [250, 50]), ("sends one by one", [100, 100, 100])]
)
def test_a_destination_that_sends_runs_takes_longer_rounds(kind, rounds, journals):
    """A queue of 300: a destination sending runs itself (mllp) takes rounds of 250, others 100; in order."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 300)
    destination = RunDestination() if kind == "sends runs" else ScriptedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    assert sum(map(len, store.attempts)) == 300
    dispatcher.stop()
    assert [len(r) for r in store.attempts] == rounds
    assert destination.sent == [f"C{n:04d}" for n in range(1, 301)]
    if kind == "sends runs":
        assert destination.runs == rounds


@pytest.mark.parametrize(
    ("queued", "urgent", "waits"),
    [(5, False, True), (5, True, False), (GATHER_BELOW, False, False)],
    ids=[
        "a small round waits",
        "not while a sender waits for a delivery",
        "not after a round of GATHER_BELOW",
    ],
)
def test_a_round_that_drained_the_queue_waits_to_gather_the_next(
    monkeypatch, queued, urgent, waits, journals
):
    """After a round of fewer than GATHER_BELOW, the next read waits GATHER_SECONDS for more to gather."""
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 0.5)
    store, reactor = FakeStore(), Clock()
    _queued(store, queued)
    destination = RunDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor, urgent=lambda: urgent)
    reads, recorded = [], []
    due_deliveries, record_attempts = store.due_deliveries, store.record_attempts
    store.due_deliveries = lambda *args, **kwargs: (
        reads.append(reactor.seconds()) or due_deliveries(*args, **kwargs)
    )
    store.record_attempts = lambda results, lease: record_attempts(results, lease).addCallback(
        lambda done: recorded.append(reactor.seconds()) or done
    )
    dispatcher.start()
    while len(reads) < 2:
        reactor.advance(0.05)
    dispatcher.stop()
    assert destination.runs == [queued] and len(recorded) == 1
    gap = reads[1] - recorded[0]
    assert gap >= 0.5 if waits else gap < 0.25


def test_a_sender_starting_to_wait_ends_the_gathering_at_once(monkeypatch, journals):
    """A notice while a sender waits cuts the gathering short: the next read is in the same instant.

    (A message for two destinations was otherwise answered up to GATHER_SECONDS late: the second
    destination's dispatcher still gathered after the previous message.)
    """
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 0.5)
    store, reactor = FakeStore(), Clock()
    _queued(store, 1)
    destination = RunDestination()
    waiting = []
    dispatcher = _dispatcher(journals, store, destination, reactor, urgent=lambda: bool(waiting))
    dispatcher.start()
    assert destination.runs == [1] and reactor.getDelayedCalls()  # gathering
    reactor.advance(0.1)
    store.add([message_row(2, deliveries=(NewDelivery("lab", Status.QUEUED, "C0002", b"MSH|"),))])
    dispatcher.notify()  # nobody waits: the gathering goes on
    assert destination.runs == [1]
    waiting.append(2)
    dispatcher.notify()
    assert destination.runs == [1, 1] and reactor.seconds() == 0.1
    dispatcher.stop()


def test_block_sends_the_due_run_in_order_and_stops_at_the_first_retry(journals):
    """on_error: block sends the queue head's run one by one.

    A RETRY on the 3rd ends it: 2 SENT, the 3rd waits, the rest untouched, one write.
    """
    store, reactor = FakeStore(), Clock()
    _queued(store, 5)
    destination = ScriptedDestination(Outcome.SENT, Outcome.SENT, Outcome.RETRY)
    dispatcher = _dispatcher(journals, store, destination, reactor, initial_seconds=60)
    dispatcher.start()
    dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0003"]
    assert _rounds(store) == [[Outcome.SENT, Outcome.SENT, Outcome.RETRY]]
    assert store.delivery_states() == [("SENT", 1), ("SENT", 1), ("QUEUED", 1), ("QUEUED", 0), ("QUEUED", 0)]
    next_at = store.next_due_at("adt", "lab", head_only=True).result
    assert next_at == T0 + timedelta(seconds=60)


def test_block_goes_on_after_an_error_in_the_run(journals):
    """An AE (ERROR) on the 3rd of a run settles it and the queue goes on, in order, with the next run."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 5)
    destination = ScriptedDestination(Outcome.SENT, Outcome.SENT, Outcome.ERROR)
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    reactor.advance(dispatcher_module.GATHER_SECONDS)  # the run of 3 was short: the next one gathers first
    dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0003", "C0004", "C0005"]
    assert _rounds(store) == [[Outcome.SENT, Outcome.SENT, Outcome.ERROR], [Outcome.SENT, Outcome.SENT]]
    assert store.delivery_states() == [("SENT", 1), ("SENT", 1), ("ERROR", 1), ("SENT", 1), ("SENT", 1)]
    assert dispatcher.settled[2] == ("C0003", Outcome.ERROR)


def test_a_retry_waits_its_backoff_then_the_queue_goes_on(journals):
    """A RETRY is tried again exactly when its backoff is over (not before).

    Then the rest follows in order.
    """
    store, reactor = FakeStore(), Clock()
    _queued(store, 2)
    destination = ScriptedDestination(Outcome.RETRY, Outcome.RETRY)
    dispatcher = _dispatcher(journals, store, destination, reactor, initial_seconds=2, multiplier=2)
    dispatcher.start()
    reactor.advance(1.99)
    assert destination.sent == ["C0001"]
    reactor.advance(0.01)  # first backoff: 2 s
    assert destination.sent == ["C0001", "C0001"]
    reactor.advance(3.99)
    assert destination.sent == ["C0001", "C0001"]
    reactor.advance(0.01)  # second backoff: 4 s
    reactor.advance(dispatcher_module.GATHER_SECONDS)
    dispatcher.stop()
    assert destination.sent == ["C0001", "C0001", "C0001", "C0002"]
    assert store.delivery_states() == [("SENT", 3), ("SENT", 1)]


def test_a_partner_that_stays_down_ends_in_error_after_max_attempts(journals):
    """With max_attempts 3 a delivery that keeps failing ends in ERROR saying it gave up after 3 attempts."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 1)
    destination = ScriptedDestination(*[Outcome.RETRY] * 10)
    dispatcher = _dispatcher(journals, store, destination, reactor, initial_seconds=0.02, max_attempts=3)
    dispatcher.start()
    reactor.pump([0.01] * 20)
    dispatcher.stop()
    assert destination.sent == ["C0001"] * 3
    assert store.delivery_states() == [("ERROR", 3)]
    assert "gave up after 3 attempt(s)" in store.attempts[-1][0].reason
    assert dispatcher.settled == [("C0001", Outcome.ERROR)]


def test_skip_lets_later_messages_pass_a_failing_one(journals):
    """on_error: skip sends the next message while the failed one waits for its retry."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 2)
    destination = ScriptedDestination(Outcome.RETRY)
    dispatcher = _dispatcher(journals, store, destination, reactor, on_error="skip", initial_seconds=0.5)
    dispatcher.start()
    reactor.pump([0.05] * 12)
    dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0001"]
    assert store.delivery_states() == [("SENT", 2), ("SENT", 1)]


def test_an_idle_queue_is_looked_at_again_every_idle_poll(journals):
    """With nothing due the queue is read again after IDLE_POLL_SECONDS (work from another process)."""
    store, reactor = FakeStore(), Clock()
    dispatcher = _dispatcher(journals, store, ScriptedDestination(), reactor)
    dispatcher.start()
    reads = store.calls.count("due_deliveries")
    reactor.advance(IDLE_POLL_SECONDS - 0.01)
    assert store.calls.count("due_deliveries") == reads
    reactor.advance(0.01)
    assert store.calls.count("due_deliveries") == reads + 1
    dispatcher.stop()


def test_stop_ends_the_run_after_the_send_under_way_then_stops_the_destination(journals):
    """One by one: stop() lets the send in flight finish, sends nothing more, then stops the destination."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 3)
    destination = GatedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    stopping = dispatcher.stop()
    assert destination.events == ["start"] and not stopping.called  # waits for the send in flight
    destination.answer(Outcome.SENT)
    assert stopping.called and destination.events == ["start", "stop"]
    assert destination.sent == ["C0001"]
    assert _rounds(store) == [[Outcome.SENT]]


def test_a_destination_that_ends_runs_itself_is_stopped_before_the_round_ends(journals):
    """stop_before_pass: the destination is stopped first (that ends its run), then the round is awaited."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 3)
    destination = GatedDestination()
    destination.stop_before_pass = True
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    stopping = dispatcher.stop()
    assert destination.events == ["start", "stop"] and not stopping.called
    destination.answer(Outcome.SENT)
    assert stopping.called


def test_a_store_failure_is_retried_after_store_retry_seconds(journals):
    """When the store fails the dispatcher reads again STORE_RETRY_SECONDS later.

    And nothing is sent meanwhile.
    """
    store, reactor = FakeStore(), Clock()
    _queued(store, 1)
    destination = ScriptedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    store.failing = True
    dispatcher.start()
    store.failing = False
    reactor.advance(0.99)
    assert destination.sent == []
    reactor.advance(0.01)
    assert destination.sent == ["C0001"]
    dispatcher.stop()


def test_stopping_waits_for_nothing_when_idle(journals):
    """stop() of an idle dispatcher fires at once and cancels its timer."""
    store, reactor = FakeStore(), Clock()
    dispatcher = _dispatcher(journals, store, ScriptedDestination(), reactor)
    dispatcher.start()
    assert dispatcher.stop().called
    assert reactor.getDelayedCalls() == []


# The journal: each outcome on disk before the next message goes, and what a crash left recorded.


def _journalled(journals, *entries: tuple[int, Outcome | None]) -> None:
    """Leave in lab's journal what a killed engine would: each (delivery n, its answer or None: in flight)."""
    journal = journals.journal("adt", "lab")
    journal.open()
    for n, outcome in entries:
        delivery = Delivery(n, n, "adt", "lab", f"C{n:04d}", b"MSH|", 1)
        journal.note_sending(delivery)
        if outcome is not None:
            journal.answered(delivery, DeliveryResult(outcome, response_code="AA"))
    journal.close()


class _JournalReader(ScriptedDestination):
    """Notes, at each send, the journal entries on disk as (kind, delivery id)."""

    def __init__(self, path, *outcomes):
        super().__init__(*outcomes)
        self.path = path
        self.on_disk: list[list[tuple[str, int]]] = []

    def send(self, delivery):
        self.on_disk.append([(entry[0], entry[1]) for entry in journal_lines(self.path)])
        return super().send(delivery)


@pytest.mark.parametrize("kind", ["sends runs", "sends one by one"])
def test_each_delivery_goes_only_once_it_and_the_answer_before_it_are_journalled(journals, kind):
    """When a message goes, its S and the previous answer are on disk; the recorded round empties the file."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 3)
    path = journals.journal("adt", "lab").path
    destination = _JournalReader(path)
    if kind == "sends runs":
        destination.send_run = RunDestination.send_run.__get__(destination)
        destination.runs = []
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    assert destination.on_disk == [
        [("S", 1)],
        [("S", 1), ("A", 1), ("S", 2)],
        [("S", 1), ("A", 1), ("S", 2), ("A", 2), ("S", 3)],
    ]
    assert _rounds(store) == [[Outcome.SENT] * 3]
    assert journal_lines(path) == []
    dispatcher.stop()


def test_after_a_crash_the_answers_journalled_are_recorded_and_only_the_one_in_flight_goes_again(journals):
    """Answers the store missed are recorded as given; the one in flight is in doubt, and sent again."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 5)
    _journalled(journals, (1, Outcome.SENT), (2, Outcome.SENT), (3, None))
    destination = ScriptedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    dispatcher.stop()
    [recovered, *_] = store.attempts
    assert [(a.delivery_id, a.outcome, a.attempt, a.in_doubt) for a in recovered] == [
        (1, Outcome.SENT, 1, False),
        (2, Outcome.SENT, 1, False),
        (3, Outcome.RETRY, 1, True),
    ]
    assert (recovered[2].reason, recovered[2].next_attempt_at) == (IN_DOUBT_REASON, T0)
    assert destination.sent == ["C0003", "C0004", "C0005"]
    assert store.delivery_states() == [("SENT", 1), ("SENT", 1), ("SENT", 2), ("SENT", 1), ("SENT", 1)]


def test_a_journal_of_a_round_already_recorded_changes_nothing(journals):
    """Killed after the round's write but before the journal was emptied: nothing counted or sent twice."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 2)
    store.record_attempts([AttemptResult(n, Outcome.SENT, T0) for n in (1, 2)])
    _journalled(journals, (1, Outcome.SENT), (2, Outcome.SENT))
    destination = ScriptedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    dispatcher.stop()
    assert destination.sent == []
    assert store.delivery_states() == [("SENT", 1), ("SENT", 1)]
    assert journal_lines(journals.journal("adt", "lab").path) == []


def test_a_round_the_store_failed_to_record_is_recorded_from_the_journal_not_sent_again(journals):
    """The store fails the round's write: the next pass records the journalled answers, sends none twice."""
    store, reactor = FakeStore(), Clock()
    _queued(store, 3)
    record_attempts = store.record_attempts
    failures = [StoreError("the store is down")]
    store.record_attempts = lambda results, lease: (
        defer.fail(failures.pop()) if failures else record_attempts(results, lease)
    )
    destination = ScriptedDestination()
    dispatcher = _dispatcher(journals, store, destination, reactor)
    dispatcher.start()
    assert destination.sent == ["C0001", "C0002", "C0003"] and store.attempts == []
    reactor.advance(STORE_RETRY_SECONDS)
    dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0003"]
    assert [[(a.outcome, a.in_doubt) for a in attempts] for attempts in store.attempts] == [
        [(Outcome.SENT, False)] * 3
    ]
    assert store.delivery_states() == [("SENT", 1)] * 3
