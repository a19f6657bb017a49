"""Retry policy and queue behaviour of the channel runner and its dispatchers."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engine.channels import runner as runner_module
from engine.channels.runner import (
    GATHER_BELOW,
    ChannelRunner,
    DestinationStages,
    Dispatcher,
    RetryPolicy,
    utcnow,
)
from engine.model import Delivery, DeliveryResult, NewDelivery, NewMessage, Outcome, ProcessingResult, Status
from engine.store.messages import MessageQuery
from tests.channels.destinations.downstream import Downstream, reply
from tests.channels.test_channels_e2e import (
    adt,
    config_for,
    free_port,
    mllp_channel,
    send,
    start,
    statuses,
    wait_until,
)
from tests.fakes.harness import in_thread


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


@pytest_twisted.inlineCallbacks
def test_a_partner_that_stays_down_ends_in_error_after_max_attempts(tmp_path):
    """With max_attempts 3 and nobody listening, the delivery ends in ERROR saying it gave up after 3 attempts."""
    queue = """
        queue:
          retry_initial_seconds: 0.02
          retry_jitter: 0
          max_attempts: 3
"""
    engine = start(config_for(tmp_path, mllp_channel(free_port(), queue=queue)))
    try:
        yield in_thread(send, engine.listeners["main"].port, [adt(1)])
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR"}))
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        message = yield engine.store.get(rows[0].id)
        assert message.deliveries[0].attempts == 3
        assert "gave up after 3 attempt(s)" in message.deliveries[0].reason
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_skip_lets_later_messages_pass_a_failing_one(tmp_path):
    """on_error: skip sends the next message while the failed one waits for its retry."""
    downstream = Downstream()
    port = downstream.start()
    queue = """
        queue:
          on_error: skip
          retry_initial_seconds: 0.5
          retry_jitter: 0
"""
    engine = start(config_for(tmp_path, mllp_channel(port, queue=queue)))
    try:
        downstream.script(reply("AR", 207), reply("AA"), reply("AA"))
        yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(2)])
        yield wait_until(lambda: len(downstream.received) >= 3)
        assert [p.split(b"|")[9] for p in downstream.received[:3]] == [b"C0001", b"C0002", b"C0001"]
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "SENT", "C0002": "SENT"})
        )
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_a_transform_error_puts_the_message_in_error_and_the_channel_goes_on(tmp_path):
    """A failing transform sends that message to ERROR with the transform's path; the next message is processed."""
    channels = """
  - name: strict
    source: main
    accept: {types: ["*"]}
    transforms:
      - map: {field: PV1-3.1, table: wards, on_miss: error}
"""
    tables = """
tables:
  wards: {inline: {"4N": "NORTH-4"}}
"""
    engine = start(config_for(tmp_path, channels, tables=tables))
    try:
        unknown_ward = adt(1).replace(b"PV1|1|O|4N", b"PV1|1|O|7W")
        replies = yield in_thread(send, engine.listeners["main"].port, [unknown_ward, adt(2)])
        assert [r.code for r in replies] == ["AA", "AA"]  # after_store: the sender only learns it was stored
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR", "C0002": "TRANSFORMED"})
        )
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        assert "channels[0].transforms[0]" in rows[0].error and "7W" in rows[0].error
        yield deferLater(reactor, 0, lambda: None)
    finally:
        yield engine.stopService()


# The dispatcher's runs and the runner's reads, against a real store


class ScriptedDestination:
    """Answers each send with the next scripted outcome (SENT when none is left) and notes the control ids, in order."""

    name = "lab"

    def __init__(self, *outcomes: Outcome):
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)

    def send(self, delivery: Delivery) -> defer.Deferred:
        self.sent.append(delivery.control_id)
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.SENT
        return defer.succeed(
            DeliveryResult(
                outcome, response_code="AA" if outcome == Outcome.SENT else "AE", reason=str(outcome)
            )
        )


class RunDestination(ScriptedDestination):
    """Sends a whole run itself, as the mllp destination does (``send_in_order``); notes the length of each run."""

    def __init__(self, *outcomes: Outcome):
        super().__init__(*outcomes)
        self.runs: list[int] = []

    def send_in_order(self, deliveries, *, stop_at_failure: bool) -> defer.Deferred:
        self.runs.append(len(deliveries))
        results = []
        for delivery in deliveries:
            result = self.send(delivery).result
            results.append(result)
            if stop_at_failure and result.outcome != Outcome.SENT:
                break
        return defer.succeed(results)


def _message(n: int) -> NewMessage:
    raw = adt(n)
    return NewMessage(
        raw=raw,
        received_at=datetime.now(UTC),
        listener="main",
        peer="test",
        status=Status.RECEIVED,
        channel="adt",
        control_id=f"C{n:04d}",
    )


@defer.inlineCallbacks
def _queued(store, count: int):
    """``count`` messages queued for the destination lab, in order: their message ids."""
    ids = yield store.add([_message(n) for n in range(1, count + 1)])
    results = [
        ProcessingResult(
            i, Status.QUEUED, deliveries=(NewDelivery("lab", Status.QUEUED, f"C{n:04d}", adt(n)),)
        )
        for n, i in enumerate(ids, start=1)
    ]
    yield store.record_processing(results)
    return ids


def _dispatcher(store, destination, urgent=lambda: False, **retry) -> tuple[Dispatcher, list]:
    """A dispatcher of channel adt for ``destination``; also the list its record_attempts calls are noted in."""
    stages = DestinationStages(
        name="lab", filters=(), transforms=(), destination=destination, retry=RetryPolicy(jitter=0, **retry)
    )
    dispatcher = Dispatcher(
        "adt",
        stages,
        store=store,
        reactor=reactor,
        clock=utcnow,
        on_settled=lambda *_: None,
        observer=lambda *_: None,
        urgent=urgent,
    )
    recorded = []
    record_attempts = store.record_attempts
    store.record_attempts = lambda results: (
        recorded.append([r.outcome for r in results]) or record_attempts(results)
    )
    return dispatcher, recorded


@defer.inlineCallbacks
def _deliveries(store, message_ids):
    """(status, attempts) of each message's delivery, in message order."""
    rows = []
    for message_id in message_ids:
        message = yield store.get(message_id)
        rows += [(d.status, d.attempts) for d in message.deliveries]
    return rows


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(
    ("kind", "rounds"), [("sends runs", [250, 50]), ("sends one by one", [100, 100, 100])]
)
def test_a_destination_that_sends_runs_takes_longer_rounds(store, kind, rounds):
    """A queue of 300: a destination sending a run itself (mllp) takes rounds of up to 250, any other up to 100; all in order."""
    yield _queued(store, 300)
    destination = RunDestination() if kind == "sends runs" else ScriptedDestination()
    dispatcher, recorded = _dispatcher(store, destination)
    dispatcher.start()
    yield wait_until(lambda: sum(map(len, recorded)) == 300)
    yield dispatcher.stop()
    assert [len(r) for r in recorded] == rounds
    assert destination.sent == [f"C{n:04d}" for n in range(1, 301)]
    if kind == "sends runs":
        assert destination.runs == rounds


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(
    ("queued", "urgent", "waits"),
    [(5, False, True), (5, True, False), (GATHER_BELOW, False, False)],
    ids=[
        "a small round waits",
        "not while a sender waits for a delivery",
        "not after a round of GATHER_BELOW",
    ],
)
def test_a_round_that_drained_the_queue_waits_to_gather_the_next(store, monkeypatch, queued, urgent, waits):
    """After a round of fewer than GATHER_BELOW deliveries, the next read of the queue waits GATHER_SECONDS for more to gather."""
    monkeypatch.setattr(runner_module, "GATHER_SECONDS", 0.5)
    yield _queued(store, queued)
    destination = RunDestination()
    dispatcher, _ = _dispatcher(store, destination, urgent=lambda: urgent)
    reads, recorded = [], []
    due_deliveries, record_attempts = store.due_deliveries, store.record_attempts
    store.due_deliveries = lambda *args, **kwargs: (
        reads.append(time.monotonic()) or due_deliveries(*args, **kwargs)
    )
    store.record_attempts = lambda results: record_attempts(results).addCallback(
        lambda done: recorded.append(time.monotonic()) or done
    )
    dispatcher.start()
    yield wait_until(lambda: len(reads) >= 2)
    yield dispatcher.stop()
    assert destination.runs == [queued] and len(recorded) == 1
    gap = reads[1] - recorded[0]
    assert gap >= 0.5 if waits else gap < 0.25


@pytest_twisted.inlineCallbacks
def test_block_sends_the_due_run_in_order_and_stops_at_the_first_retry(store):
    """on_error: block sends the queue head's run one by one; a RETRY on the 3rd ends it: 2 SENT, the 3rd waits, the rest untouched, one write."""
    ids = yield _queued(store, 5)
    destination = ScriptedDestination(Outcome.SENT, Outcome.SENT, Outcome.RETRY)
    dispatcher, recorded = _dispatcher(store, destination, initial_seconds=60)
    before = datetime.now(UTC)
    dispatcher.start()
    yield wait_until(lambda: recorded)
    yield dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0003"]
    assert recorded == [[Outcome.SENT, Outcome.SENT, Outcome.RETRY]]
    assert (yield _deliveries(store, ids)) == [
        ("SENT", 1),
        ("SENT", 1),
        ("QUEUED", 1),
        ("QUEUED", 0),
        ("QUEUED", 0),
    ]
    next_at = yield store.next_due_at("adt", "lab", head_only=True)
    assert before + timedelta(seconds=59) < next_at < datetime.now(UTC) + timedelta(seconds=61)


@pytest_twisted.inlineCallbacks
def test_block_goes_on_after_an_error_in_the_run(store):
    """An AE (ERROR) on the 3rd of a run settles it and the queue goes on, in order, with the next run."""
    ids = yield _queued(store, 5)
    destination = ScriptedDestination(Outcome.SENT, Outcome.SENT, Outcome.ERROR)
    dispatcher, recorded = _dispatcher(store, destination)
    dispatcher.start()
    yield wait_until(lambda: len(recorded) >= 2)
    yield dispatcher.stop()
    assert destination.sent == ["C0001", "C0002", "C0003", "C0004", "C0005"]
    assert recorded == [[Outcome.SENT, Outcome.SENT, Outcome.ERROR], [Outcome.SENT, Outcome.SENT]]
    assert (yield _deliveries(store, ids)) == [
        ("SENT", 1),
        ("SENT", 1),
        ("ERROR", 1),
        ("SENT", 1),
        ("SENT", 1),
    ]


@pytest_twisted.inlineCallbacks
def test_the_runner_finds_messages_below_what_it_already_read(store):
    """A message back to RECEIVED with a lower id (reprocess; on PostgreSQL, a commit that came late) is processed on the next pass."""
    runner = ChannelRunner("adt", store=store, reactor=reactor, filters=(), transforms=(), destinations=())
    ids = yield store.add([_message(n) for n in range(1, 4)])
    runner.start()
    try:
        yield wait_until(lambda: statuses_of(store, ids).addCallback(lambda s: s == ["TRANSFORMED"] * 3))
        assert (yield store.reprocess([ids[0]])) == 1
        runner.notify()
        yield wait_until(
            lambda: store.get(ids[0]).addCallback(
                lambda m: [e.status for e in m.events] == ["TRANSFORMED", "RECEIVED", "TRANSFORMED"]
            )
        )
    finally:
        yield runner.stop()


def statuses_of(store, message_ids) -> defer.Deferred:
    """The statuses of the messages, in the order given."""
    d = defer.gatherResults([store.get(i) for i in message_ids])
    return d.addCallback(lambda messages: [m.status for m in messages])


@pytest_twisted.inlineCallbacks
def test_processing_at_intake_waits_until_nothing_of_the_channel_waits_for_a_pass(store):
    """process_at_intake declines before the first pass and while a declined message is unstored or unprocessed, so none overtakes another."""
    runner = ChannelRunner("adt", store=store, reactor=reactor, filters=(), transforms=(), destinations=())
    left_from_before = yield store.add([_message(1)])
    assert not runner.processes_at_intake
    assert (
        runner.process_at_intake(adt(2).decode(), "utf-8", "C0002") is None
    )  # not caught up: message 1 waits for a pass
    assert (
        runner.process_at_intake(adt(3).decode(), "utf-8", "C0003") is None
    )  # message 2 is on its way to the store
    runner.intake_stored(None)  # message 3 could not be stored (its sender is told AR)
    [second] = yield store.add([_message(2)])
    runner.intake_stored(second)
    assert (
        runner.process_at_intake(adt(4).decode(), "utf-8", "C0004") is None
    )  # message 2 is stored, not processed yet
    runner.intake_stored(None)
    runner.start()
    try:
        yield wait_until(
            lambda: statuses_of(store, [*left_from_before, second]).addCallback(
                lambda s: s == ["TRANSFORMED"] * 2
            )
        )
        yield wait_until(lambda: runner.processes_at_intake)
        result = runner.process_at_intake(adt(5).decode(), "utf-8", "C0005")
        assert result is not None and result.status == Status.TRANSFORMED
    finally:
        yield runner.stop()
    assert (
        not runner.processes_at_intake and runner.process_at_intake(adt(6).decode(), "utf-8", "C0006") is None
    )  # stopped
