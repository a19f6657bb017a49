"""A destination's durable queue drained in order: retries with backoff and jitter, giving up, settling.

``Dispatcher`` reads the due deliveries of one destination, hands each round to the
destination's ``send_run``, and records every attempt's outcome in one write per round; a
RETRY waits as ``RetryPolicy`` says, or becomes an ERROR once the policy gives up. With
``on_error: block`` only the head of the queue is due, so the order of receipt is kept; ``on_error:
halt`` keeps it too, and at the first ERROR pauses the queue in the store (engine.store.controls)
until an operator resumes it, the failed delivery then retried first.

An operator's pause (``set_paused``, told by the process's ``PauseWatch``) holds the dispatcher: it
finishes the delivery in flight and sends nothing more until the pause is gone.

Each message's outcome is in the queue's journal (``journal.py``) before the next message goes;
the round's write to the store then empties the journal. Before reading the queue, a pass records
whatever the journal still holds (the engine stopped, or the store failed, before the round was
recorded): the answers as they came, and the one delivery that was in flight as an attempt in
doubt, a possible duplicate, to be sent again at once.

A dispatcher works only while this process holds its queue's lease (``leases.queue_key``): when
the lease is lost it stops after the delivery in flight and closes the destination's connections,
and its attempts are written under the lease's token, so a process that lost it writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from twisted.internet import defer
from twisted.logger import Logger

from engine.channels.destinations.base import Destination
from engine.channels.journal import DeliveryJournal, Unrecorded
from engine.channels.leases import LOCAL_LEASES, Leases, queue_key
from engine.channels.passes import IDLE_POLL_SECONDS, Passes
from engine.channels.pausing import Controls
from engine.channels.wakeups import Wakeups, settled_key, urgent_key
from engine.model import AttemptResult, Delivery, DeliveryResult, LeaseToken, Outcome
from engine.store.reads import Pause

__all__ = ["GATHER_BELOW", "GATHER_SECONDS", "Dispatcher", "RetryPolicy"]

log = Logger()

# After a round of fewer than GATHER_BELOW deliveries (the queue was drained: messages arrive one
# by one), the next round waits GATHER_SECONDS for more to queue, unless a sender waits for its
# message's delivery (respond: after_processing). A round's read, hand-off to the destination and
# write of the attempts cost about the same for one message as for ten, so rounds of one message
# cost several times more CPU a message than the full rounds of many connections; a short wait to
# gather measured faster end to end and for the record with one sender (see docs/performance.md).
# A delivery then leaves at most GATHER_SECONDS later than it could have, except that a sender
# starting to wait (a notice while ``urgent()``) ends the wait at once: without that, a message of
# one sender waiting for two destinations was answered up to GATHER_SECONDS late, the gathering
# of the previous message's round holding the second destination back.
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
    # block: keep order, wait for the head; skip: go on with the next; halt: as block, and stop at the
    # first ERROR until an operator resumes the queue
    on_error: str = "block"

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
        leases: Leases = LOCAL_LEASES,
        wakeups: Wakeups | None = None,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
        controls: Controls | None = None,
    ):
        """``urgent()`` says whether a sender waits for a delivery now: rounds do not wait to gather then.

        ``leases``: whether this process may drain the queue now (it holds ``queue_key``).
        ``wakeups`` (other processes share the store): the queue's key wakes this dispatcher (its
        urgent key hurries it), and settled deliveries are told to the others (a sender there may
        wait for them).
        ``controls``: the process's pauses, applied by its ``PauseWatch``: the dispatcher is then held
        until the watch's first read says its queue is not paused. Without, it is never held at
        start (an ``on_error: halt`` queue writes its pause through the store all the same).
        """
        super().__init__(
            reactor,
            leases=leases,
            key=queue_key(channel, destination.name),
            idle_poll_seconds=idle_poll_seconds,
        )
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
        self._gathering: tuple[defer.Deferred, object] | None = None  # the wait, and its timer
        self._wakeups = wakeups
        self._controls = controls or Controls(store)
        # A release read before this (reactor) time does not undo the halt written at it.
        self._halted_at = float("-inf")
        if controls is not None:
            self.hold_passes()

    @property
    def name(self) -> str:
        """The destination's name: with the channel's, the key of the queue."""
        return self.destination.name

    def start(self) -> None:
        """Once the queue's lease is held: open the journal, start the destination, look at the queue.

        What the journal holds is recorded first.
        """
        self.work_under_lease(
            self._wakeups,
            {
                queue_key(self.channel, self.name): self.notify,
                urgent_key(self.channel, self.name): self.hurry,
            },
        )

    @defer.inlineCallbacks
    def stop(self):
        """Finish the round under way, close the destination's connections, give the lease back."""
        self.stop_hearing()
        yield self._halt(self.stop_passes())
        yield self.leases.unwatch(self.key)
        self.journal.close()

    def lease_acquired(self) -> None:
        # Read only now, under the lease: the journal as the queue's last holder left it (a node
        # SIGKILLed mid-round), and its writes fenced by this holding's token.
        self.journal.open()
        self.destination.start()
        self.resume_passes()

    def lease_lost(self) -> defer.Deferred:
        return self._halt(self.pause_passes()).addCallback(lambda _: self.journal.close())

    @defer.inlineCallbacks
    def _halt(self, passes: defer.Deferred):
        """Once ``passes`` (stopped or paused) ended their round, close the destination's connections.

        A destination that ends a run itself (``stop_before_pass``) is stopped first: that ends the
        run after the message in flight, as ``send_run`` ends after the send under way.
        """
        if self._gathering is not None:  # no round follows: nothing to gather for
            self._end_gathering()
        if self.destination.stop_before_pass:
            yield self.destination.stop()
            yield passes
        else:
            yield passes
            yield self.destination.stop()

    def describe(self) -> str:
        return f"channel {self.channel} destination {self.name}"

    def set_paused(self, pause: Pause | None, *, read_at: float) -> None:
        """What the store said at ``read_at`` (reactor seconds): held while ``pause``, else released."""
        if pause is not None:
            if not self.held:
                log.info(
                    "channel {channel} destination {destination}: paused by {by}",
                    channel=self.channel,
                    destination=self.name,
                    by=pause.paused_by,
                )
                self.hold_passes()
        elif self.held and read_at >= self._halted_at:
            self.release_passes()

    def notify(self) -> None:
        """Work may be waiting: a pass now, or right after the one under way (sooner when a sender waits)."""
        if self._urgent():
            self.hurry()
        else:
            super().notify()

    def hurry(self) -> None:
        """A sender (here or in another process) waits for this queue: a pass now, not after gathering."""
        super().notify()
        if self._gathering is not None:
            self._end_gathering()

    def _gather(self) -> defer.Deferred:
        """Wait GATHER_SECONDS for more deliveries to queue (ended early by ``_end_gathering``)."""
        waiting = defer.Deferred()
        self._gathering = (waiting, self.reactor.callLater(GATHER_SECONDS, self._end_gathering))
        return waiting

    def _end_gathering(self) -> None:
        waiting, timer = self._gathering
        self._gathering = None
        if timer.active():
            timer.cancel()
        waiting.callback(None)

    @defer.inlineCallbacks
    def run_pass(self):
        head_only = self.retry.on_error in ("block", "halt")
        destination = self.destination

        def stopped() -> bool:
            return not self.may_work

        # Every write of this pass names the lease it was taken under: once lost, nothing is written.
        lease = self.leases.token(self.key)
        while self.may_work:
            unrecorded = self.journal.unrecorded()
            if unrecorded:
                yield self._recover(unrecorded, lease)
                if not self.may_work:  # a replayed ERROR halted the queue
                    return
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
            yield self._record(attempts, settled, lease)
            if len(due) < GATHER_BELOW and self.may_work and not self._urgent():
                yield self._gather()

    def _halt_at(self, attempts: Sequence[AttemptResult]) -> AttemptResult | None:
        """With ``on_error: halt``, the first attempt that ended in ERROR: the queue stops there."""
        if self.retry.on_error != "halt":
            return None
        return next((a for a in attempts if a.outcome == Outcome.ERROR), None)

    def _recover(self, unrecorded: Sequence[Unrecorded], lease: LeaseToken | None) -> defer.Deferred:
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
        return self._record(attempts, settled, lease)

    @defer.inlineCallbacks
    def _record(
        self,
        attempts: Sequence[AttemptResult],
        settled: Sequence[tuple[Delivery, DeliveryResult]],
        lease: LeaseToken | None,
    ):
        """Write the attempts in one store write, then empty the journal and tell who waits for settling.

        With ``on_error: halt``, an ERROR among them pauses the queue first: were the engine to stop
        before the attempts are recorded, the queue stays halted and the journal records them at
        the next start (replayed answers halt it too, so a failed message is never left behind).
        """
        halted = self._halt_at(attempts)
        if halted is not None:
            yield self._controls.halt(self.channel, self.name, halted.delivery_id, halted.reason)
            self._halted_at = self.reactor.seconds()
            self.hold_passes()
            log.warn(
                "channel {channel} destination {destination}: halted at delivery {delivery}"
                " (on_error: halt) until an operator resumes it",
                channel=self.channel,
                destination=self.name,
                delivery=halted.delivery_id,
            )
        yield self.store.record_attempts(attempts, lease)
        self.journal.recorded()
        for delivery, result in settled:
            self.on_settled(delivery, result)
        if settled and self._wakeups is not None:
            self._wakeups.send(settled_key(self.channel))

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
        """Look again when the head is due, and at least every ``idle_poll_seconds``."""
        poll = self.idle_poll_seconds
        delay = poll if next_at is None else max(0.0, (next_at - self.clock()).total_seconds())
        self.look_again_in(min(poll, delay))
