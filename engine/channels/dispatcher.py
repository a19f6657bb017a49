"""A destination's durable queue drained in order: retries with backoff and jitter, giving up, settling.

``Dispatcher`` reads the due deliveries of one destination, hands each round to the
destination's ``send_run``, and records every attempt's outcome in one write per round; a
RETRY waits as ``RetryPolicy`` says, or becomes an ERROR once the policy gives up. With
``on_error: block`` only the head of the queue is due, so the order of receipt is kept.

Each message's outcome is in the queue's journal (``journal.py``) before the next message goes;
the round's write to the store then empties the journal. Before reading the queue, a pass records
whatever the journal still holds (the engine stopped, or the store failed, before the round was
recorded): the answers as they came, and the one delivery that was in flight as an attempt in
doubt, a possible duplicate, to be sent again at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.channels.destinations.base import Destination
from engine.channels.journal import DeliveryJournal, Unrecorded
from engine.channels.passes import IDLE_POLL_SECONDS, Passes
from engine.model import AttemptResult, Delivery, DeliveryResult, Outcome

__all__ = ["GATHER_BELOW", "GATHER_SECONDS", "Dispatcher", "RetryPolicy"]

log = Logger()

# After a round of fewer than GATHER_BELOW deliveries (the queue was drained: messages arrive one
# by one), the next round waits GATHER_SECONDS for more to queue, unless a sender waits for its
# message's delivery (respond: after_processing). A round's read, hand-off to the destination and
# write of the attempts cost about the same for one message as for ten, so rounds of one message
# cost several times more CPU a message than the full rounds of many connections; a short wait to
# gather measured faster end to end and for the record with one sender (see docs/performance.md).
# A delivery then leaves at most GATHER_SECONDS later than it could have.
GATHER_BELOW = 20
GATHER_SECONDS = 0.010

#: Why an attempt the journal shows in flight is in doubt (its event says so, with "possible duplicate").
IN_DOUBT_REASON = "the engine stopped while it was in flight, before its answer was recorded; sent again"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again, and when to give up."""

    initial_seconds: float = 1.0
    max_seconds: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of the delay, so many queues do not retry in step
    max_attempts: int | None = 10
    max_age_seconds: float | None = None
    on_error: str = "block"  # block: keep order, wait for the head; skip: go on with the next

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** (attempt - 1))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))

    def gives_up(self, attempt: int, age_seconds: float) -> bool:
        """True when ``attempt`` was the last one allowed."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return True
        return self.max_age_seconds is not None and age_seconds >= self.max_age_seconds


#: Told when a delivery settled for good (SENT or ERROR), once its attempt is recorded.
Settled = Callable[[Delivery, DeliveryResult], None]


class Dispatcher(Passes):
    """Drains one destination's durable queue in order, with retries, backoff and give-up."""

    def __init__(
        self,
        channel: str,
        destination: Destination,
        retry: RetryPolicy,
        *,
        store,
        journal: DeliveryJournal,
        reactor,
        clock: Callable[[], datetime],
        on_settled: Settled,
        observer: Callable[[str, dict], None],
        rng: random.Random | None = None,
        urgent: Callable[[], bool] = lambda: False,
        idle_poll: float = IDLE_POLL_SECONDS,
    ):
        """``urgent()`` says whether a sender waits for a delivery now: rounds do not wait to gather then.

        ``idle_poll``: how often an idle queue is read anyway (sooner where other processes queue its work).
        """
        super().__init__(reactor, idle_poll=idle_poll)
        self.channel = channel
        self.destination = destination
        self.retry = retry
        self.store = store
        self.journal = journal
        self.clock = clock
        self.on_settled = on_settled
        self._observe = observer
        self.rng = rng or random.Random()
        self._urgent = urgent

    @property
    def name(self) -> str:
        """The destination's name: with the channel's, the key of the queue."""
        return self.destination.name

    def start(self) -> None:
        """Open the journal (what it holds is recorded first), start the destination, look at the queue."""
        self.journal.open()
        self.destination.start()
        self.notify()

    @defer.inlineCallbacks
    def stop(self):
        """Finish the round under way, then close the destination's connections.

        A destination that ends a run itself (``stop_before_pass``) is stopped first: that ends the
        run after the message in flight, as ``send_run`` ends after the send under way.
        """
        passes = self.stop_passes()
        if self.destination.stop_before_pass:
            yield self.destination.stop()
            yield passes
        else:
            yield passes
            yield self.destination.stop()
        self.journal.close()

    def describe(self) -> str:
        return f"channel {self.channel} destination {self.name}"

    @defer.inlineCallbacks
    def run_pass(self):
        head_only = self.retry.on_error == "block"
        destination = self.destination

        def stopped() -> bool:
            return self.stopped

        while not self.stopped:
            unrecorded = self.journal.unrecorded()
            if unrecorded:
                yield self._recover(unrecorded)
            # With on_error: block, the due run at the head of the queue: sent in order, one at a time,
            # up to the first that is not SENT; the attempts of the whole run are recorded in one write.
            due = yield self.store.due_deliveries(
                self.channel, self.name, now=self.clock(), limit=destination.round_size, head_only=head_only
            )
            if not due:
                next_at = yield self.store.next_due_at(self.channel, self.name, head_only=head_only)
                self._schedule(next_at)
                return
            results = yield destination.send_run(
                due, stop_at_failure=head_only, stopped=stopped, journal=self.journal
            )
            if not results:  # the destination stopped before sending anything
                return
            attempts, settled = self._decide(list(zip(due, results)), replay=False)
            yield self._record(attempts, settled)
            if len(due) < GATHER_BELOW and not self.stopped and not self._urgent():
                yield task.deferLater(self.reactor, GATHER_SECONDS, lambda: None)

    def _recover(self, unrecorded: Sequence[Unrecorded]) -> defer.Deferred:
        """Record what the journal holds: the answers that came, and the attempt in flight as in doubt.

        Every one names its attempt: what the store already has (the round was recorded, the
        journal not emptied yet) is not counted again.
        """
        answered = [(u.delivery, u.result) for u in unrecorded if u.result is not None]
        attempts, settled = self._decide(answered, replay=True)
        now = self.clock()
        for u in unrecorded:
            if u.result is None:
                log.warn(
                    "channel {channel} destination {destination}: delivery {delivery} was in flight when the"
                    " engine stopped; sending it again, a possible duplicate",
                    channel=self.channel,
                    destination=self.name,
                    delivery=u.delivery.delivery_id,
                )
                attempts.append(
                    AttemptResult(
                        u.delivery.delivery_id,
                        Outcome.RETRY,
                        now,
                        reason=IN_DOUBT_REASON,
                        next_attempt_at=now,
                        attempt=u.delivery.attempt,
                        in_doubt=True,
                    )
                )
        return self._record(attempts, settled)

    def _record(
        self, attempts: Sequence[AttemptResult], settled: Sequence[tuple[Delivery, DeliveryResult]]
    ) -> defer.Deferred:
        """Write the attempts in one store write, then empty the journal and tell who waits for settling."""
        d = self.store.record_attempts(attempts)

        def recorded(_):
            self.journal.recorded()
            for delivery, result in settled:
                self.on_settled(delivery, result)

        d.addCallback(recorded)
        return d

    def _decide(
        self, outcomes: Sequence[tuple[Delivery, DeliveryResult]], *, replay: bool
    ) -> tuple[list[AttemptResult], list[tuple[Delivery, DeliveryResult]]]:
        """What the retry policy makes of each answer: the attempts to record, and the settled deliveries."""
        now = self.clock()
        attempts = []
        settled = []
        for delivery, result in outcomes:
            outcome = result.outcome
            next_at = None
            reason = result.reason
            if outcome == Outcome.RETRY:
                age = (now - delivery.queued_at).total_seconds() if delivery.queued_at else 0.0
                if self.retry.gives_up(delivery.attempt, age):
                    outcome = Outcome.ERROR
                    reason = f"gave up after {delivery.attempt} attempt(s): {result.reason}"
                else:
                    next_at = now + timedelta(seconds=self.retry.delay(delivery.attempt, self.rng))
            attempts.append(
                AttemptResult(
                    delivery.delivery_id,
                    outcome,
                    now,
                    response=result.response,
                    response_code=result.response_code,
                    reason=reason,
                    next_attempt_at=next_at,
                    attempt=delivery.attempt if replay else None,
                )
            )
            self._observe(
                "delivery", {"channel": self.channel, "destination": self.name, "outcome": str(outcome)}
            )
            if outcome != Outcome.RETRY:
                settled.append(
                    (delivery, DeliveryResult(outcome, result.response, result.response_code, reason))
                )
            if outcome == Outcome.ERROR:
                log.warn(
                    "channel {channel} destination {destination}: delivery {delivery} failed for good:"
                    " {reason}",
                    channel=self.channel,
                    destination=self.name,
                    delivery=delivery.delivery_id,
                    reason=reason,
                )
        return attempts, settled

    def _schedule(self, next_at: datetime | None) -> None:
        """Look again when the head is due, and at least every ``idle_poll`` seconds."""
        delay = self.idle_poll if next_at is None else max(0.0, (next_at - self.clock()).total_seconds())
        self.look_again_in(min(self.idle_poll, delay))
