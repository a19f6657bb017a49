"""Channel processing: from a stored RECEIVED message to queued deliveries, and from the queues downstream.

``ChannelRunner`` takes a channel's RECEIVED messages in order of receipt, runs the channel's
filters and transforms, then each destination's, and records the outcome (FILTERED, ERROR,
QUEUED) with the deliveries in one transaction. ``Dispatcher`` drains one destination's durable
FIFO queue: it sends in order, retries with exponential backoff and jitter, and gives up after
the configured attempts or age. Only these two turn stage results into statuses and logs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.channels.stages import Destination, Filter, Transform
from engine.errors import HL7Error, StoreError, TransformError
from engine.hl7.charset import decode, encode
from engine.hl7.message import Message
from engine.model import (
    AttemptResult,
    Delivery,
    DeliveryResult,
    NewDelivery,
    Outcome,
    ProcessingResult,
    ReceivedMessage,
    Status,
    roll_up,
)

log = Logger()

#: How long to wait before trying again after the store itself failed.
STORE_RETRY_SECONDS = 1.0
#: How often an idle runner or dispatcher looks at the store anyway: work may come from another
#: process (an operator's resend or reprocess from the CLI, another engine node).
IDLE_POLL_SECONDS = 5.0


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


@dataclass
class DestinationStages:
    """One destination of a channel: its filters, transforms, connector and queue policy."""

    name: str
    filters: Sequence[Filter]
    transforms: Sequence[Transform]
    destination: Destination
    retry: RetryPolicy
    batch: bool = False  # hand due messages to send_batch() in one go (file destination)


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Passes:
    """One pass at a time over durable work: notify() during a pass asks for one more right after it.

    When nothing is left, the next look is scheduled (a timer a pass may set itself, or the idle
    poll); when the store fails, a retry after STORE_RETRY_SECONDS. Subclasses give ``_pass``
    and ``describe``.
    """

    def _init_passes(self, reactor) -> None:
        self.reactor = reactor
        self._running = False
        self._again = False
        self._stopped = False
        self._timer = None
        self._idle: list[defer.Deferred] = []

    def describe(self) -> str:
        raise NotImplementedError

    def _pass(self) -> defer.Deferred:
        raise NotImplementedError

    def notify(self) -> None:
        """Work may be waiting: run a pass now, or right after the one under way."""
        if self._stopped:
            return
        if self._running:
            self._again = True
            return
        self._cancel_timer()
        self._running = True
        self._pass().addBoth(self._pass_done)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _look_again_in(self, seconds: float) -> None:
        if not self._stopped:
            self._cancel_timer()
            self._timer = self.reactor.callLater(seconds, self.notify)

    def _pass_done(self, result) -> None:
        self._running = False
        if isinstance(result, defer.Failure):
            if result.check(StoreError):
                log.warn(
                    "{what}: store unavailable ({error}); retrying",
                    what=self.describe(),
                    error=result.getErrorMessage(),
                )
            else:
                log.failure("{what}: pass failed", result, what=self.describe())
            self._look_again_in(STORE_RETRY_SECONDS)
        elif self._again:
            self._again = False
            self.notify()
        elif self._timer is None or not self._timer.active():
            self._look_again_in(IDLE_POLL_SECONDS)
        if not self._running:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def _stop_passes(self) -> defer.Deferred:
        """Stop scheduling passes; fires once the pass under way (if any) is over."""
        self._stopped = True
        self._cancel_timer()
        if not self._running:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle.append(waiter)
        return waiter


class ChannelRunner(_Passes):
    """Processes one channel's RECEIVED messages, in order of receipt, and feeds its dispatchers."""

    def __init__(
        self,
        name: str,
        *,
        store,
        reactor,
        filters: Sequence[Filter],
        transforms: Sequence[Transform],
        destinations: Sequence[DestinationStages],
        default_charset: str = "utf-8",
        batch_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        observer: Callable[[str, dict], None] | None = None,
    ):
        self.name = name
        self.store = store
        self._init_passes(reactor)
        self.filters = tuple(filters)
        self.transforms = tuple(transforms)
        self.destinations = tuple(destinations)
        self.default_charset = default_charset
        self.batch_size = batch_size
        self.clock = clock
        self._observe = observer or (lambda event, fields: None)
        self.dispatchers = {
            d.name: Dispatcher(
                name,
                d,
                store=store,
                reactor=reactor,
                clock=clock,
                on_settled=self._delivery_settled,
                observer=self._observe,
                urgent=lambda: bool(self._waiters),
            )
            for d in self.destinations
        }
        # Processing at intake (process_at_intake) keeps the order of receipt only while nothing of
        # this channel waits for a pass: not before a pass has found nothing left from before
        # (recovery), nor while messages of the intake are on their way to the store as RECEIVED
        # (held) or stored and not yet processed by a pass (tracked).
        self._caught_up = False
        self._held = 0
        self._tracked: set[int] = set()
        # after_processing: message id -> waiter, and the deliveries each message still waits for
        self._waiters: dict[int, defer.Deferred] = {}
        self._open_deliveries: dict[int, set[int]] = {}
        self._results: dict[int, list[DeliveryResult]] = {}

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatchers and process whatever was left RECEIVED (recovery after a restart)."""
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        self.notify()

    @defer.inlineCallbacks
    def stop(self):
        """Finish the pass under way, then stop the dispatchers and their connectors."""
        yield self._stop_passes()
        yield defer.gatherResults([d.stop() for d in self.dispatchers.values()], consumeErrors=True)

    def describe(self) -> str:
        return f"channel {self.name}"

    def wait_for(self, message_id: int) -> defer.Deferred:
        """Fires with the final (status, results) of a message once processing and delivery settle."""
        waiter = defer.Deferred()
        self._waiters[message_id] = waiter
        return waiter

    # -- processing ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _pass(self):
        after_id = 0
        while not self._stopped:
            stored_before = set(
                self._tracked
            )  # committed before this read, so it sees them if still RECEIVED
            rows = yield self.store.pending_for_processing(
                self.name, after_id=after_id, limit=self.batch_size
            )
            if not rows:
                self._tracked -= stored_before
                self._caught_up = True
                return
            results = [self.process(row) for row in rows]
            delivery_ids = yield self.store.record_processing(results)
            self._tracked.difference_update(result.message_id for result in results)
            after_id = rows[-1].id
            self._after_recording(results, delivery_ids)

    @property
    def processes_at_intake(self) -> bool:
        """Whether process_at_intake processes a message now: nothing of this channel waits for a pass."""
        return self._caught_up and not self._held and not self._tracked and not self._stopped

    def process_at_intake(self, text: str, codec: str, control_id: str) -> ProcessingResult | None:
        """Process a message before it is stored, so that it is stored processed, with its deliveries, in the intake's transaction.

        None when it must wait its turn: it is then stored RECEIVED and a pass processes it, and
        the intake must call ``intake_stored`` once the store answered. That is so until this
        runner has caught up (a pass found nothing left), while other messages of the intake wait
        for a pass, and after a stage failed unexpectedly (a pass reports that as it always does).
        """
        if self.processes_at_intake:
            try:
                return self._process(0, text, codec, control_id)
            except Exception:
                log.failure(
                    "channel {channel}: processing at intake failed; a pass processes the message",
                    channel=self.name,
                )
        self._held += 1
        return None

    def intake_stored(self, message_id: int | None) -> None:
        """A message process_at_intake declined was stored RECEIVED (its id), or not stored at all (None)."""
        self._held -= 1
        if message_id is not None:
            self._tracked.add(message_id)

    def processed_at_intake(self, results: Sequence[ProcessingResult]) -> None:
        """Messages processed by process_at_intake were stored: count them and wake the dispatchers."""
        for result in results:
            self._observe("processed", {"channel": self.name, "status": str(result.status)})
        for dispatcher in self.dispatchers.values():
            dispatcher.notify()

    def process(self, row: ReceivedMessage) -> ProcessingResult:
        """Run one message through the channel's and each destination's filters and transforms (pure, no I/O)."""
        decoded = decode(row.raw, self.default_charset)
        return self._process(row.id, decoded.text, decoded.codec, row.control_id)

    def _process(self, message_id: int, text: str, codec: str, control_id: str) -> ProcessingResult:
        try:
            message = Message.parse(text)
            for stage in self.filters:
                reason = stage.check(message)
                if reason is not None:
                    return ProcessingResult(message_id, Status.FILTERED, reason=reason)
            for stage in self.transforms:
                message = stage.apply(message)
        except (TransformError, HL7Error) as error:
            return ProcessingResult(message_id, Status.ERROR, reason=str(error))
        text = message.to_text()
        transformed = encode(text, codec) if self.transforms else None
        deliveries = tuple(self._delivery(d, text, codec, control_id) for d in self.destinations)
        status = roll_up(d.status for d in deliveries)
        reason = "; ".join(
            f"{d.destination}: {d.reason}" for d in deliveries if d.reason and status != Status.QUEUED
        )
        return ProcessingResult(
            message_id, status, reason=reason, transformed=transformed, deliveries=deliveries
        )

    def _delivery(self, stages: DestinationStages, text: str, codec: str, control_id: str) -> NewDelivery:
        # Each destination transforms its own copy: what one changes, the next does not see.
        message = Message.parse(text) if stages.transforms or stages.filters else None
        try:
            for stage in stages.filters:
                reason = stage.check(message)
                if reason is not None:
                    return NewDelivery(stages.name, Status.FILTERED, control_id, None, reason)
            for stage in stages.transforms:
                message = stage.apply(message)
        except (TransformError, HL7Error) as error:
            return NewDelivery(stages.name, Status.ERROR, control_id, None, str(error))
        out = message.to_text() if message is not None else text
        control_id = message.get("MSH-10") if message is not None else control_id
        return NewDelivery(stages.name, Status.QUEUED, control_id, encode(out + "\r", codec))

    def _after_recording(self, results: Sequence[ProcessingResult], delivery_ids: Sequence[int]) -> None:
        if len(delivery_ids) != sum(len(r.deliveries) for r in results):
            # Some results were skipped (another process handled those messages): the ids cannot be
            # matched to deliveries, so waiters of this pass are answered on their timeout instead.
            for dispatcher in self.dispatchers.values():
                dispatcher.notify()
            return
        ids = iter(delivery_ids)
        for result in results:
            self._observe("processed", {"channel": self.name, "status": str(result.status)})
            queued: set[int] = set()
            for delivery in result.deliveries:
                delivery_id = next(ids)
                if delivery.status == Status.QUEUED:
                    queued.add(delivery_id)
            waiter = self._waiters.get(result.message_id)
            if waiter is None:
                continue
            if queued:
                self._open_deliveries[result.message_id] = queued
                self._results[result.message_id] = []
            else:
                del self._waiters[result.message_id]
                waiter.callback((result.status, result.reason, []))
        for dispatcher in self.dispatchers.values():
            dispatcher.notify()

    def _delivery_settled(self, delivery: Delivery, result: DeliveryResult, final_outcome: Outcome) -> None:
        """A dispatcher recorded a final outcome (SENT or ERROR) for a delivery."""
        open_ids = self._open_deliveries.get(delivery.message_id)
        if open_ids is None:
            return
        open_ids.discard(delivery.delivery_id)
        self._results[delivery.message_id].append(result)
        if open_ids:
            return
        del self._open_deliveries[delivery.message_id]
        results = self._results.pop(delivery.message_id)
        waiter = self._waiters.pop(delivery.message_id, None)
        if waiter is not None:
            status = roll_up(Status(r.outcome) for r in results)  # final outcomes: SENT or ERROR
            waiter.callback((status, "; ".join(r.reason for r in results if r.reason), results))

    def forget(self, message_id: int) -> None:
        """Stop waiting for a message (its sender was answered on timeout)."""
        self._waiters.pop(message_id, None)
        self._open_deliveries.pop(message_id, None)
        self._results.pop(message_id, None)


# Deliveries a dispatcher round takes at most. A round's read and its one write of the attempts
# cost the same for one message or many; a destination that sends a run itself (mllp, on its own
# thread) takes longer runs, so that a queue that fell behind catches up (measured end to end at
# 8 connections, interleaved: 250 delivered 2,083 / 1,973 / 1,867 msg/s where 100 delivered
# 1,950 / 1,623 / 1,529, the queue at the window's end 208-664 instead of 2,618-3,311). A
# batch (the record's one writer call, a file's one envelope) stays at 100: the record's call
# holds the store's write lock, which intake waits behind.
ROUND = 100
SENT_RUN = 250

# After a round of fewer than GATHER_BELOW deliveries (the queue was drained: messages arrive one
# by one), the next round waits GATHER_SECONDS for more to queue, unless a sender waits for its
# message's delivery (respond: after_processing). A round's read, hand-off to the destination and
# write of the attempts cost about the same for one message as for ten: with one sender, rounds of
# one message cost ~1,100-1,200 us of CPU a message end to end, against ~440 at 8 connections,
# whose rounds hold ~200. Measured with one sender (interleaved A/B): end to end 866 / 931 msg/s
# without the wait, 1,214 / 1,230 with 5 ms, 1,338 with 10 ms; the record 486 / 590, 754 / 787, 881.
# A delivery then leaves at most GATHER_SECONDS later than it could have.
GATHER_BELOW = 20
GATHER_SECONDS = 0.010


class Dispatcher(_Passes):
    """Drains one destination's durable queue in order, with retries, backoff and give-up."""

    def __init__(
        self,
        channel: str,
        stages: DestinationStages,
        *,
        store,
        reactor,
        clock: Callable[[], datetime],
        on_settled,
        observer,
        rng: random.Random | None = None,
        batch_size: int | None = None,
        urgent: Callable[[], bool] = lambda: False,
    ):
        """``urgent()`` says whether a sender waits for a delivery now: rounds do not wait to gather then."""
        self.channel = channel
        self._urgent = urgent
        self.stages = stages
        self.store = store
        self._init_passes(reactor)
        self.clock = clock
        self.on_settled = on_settled
        self._observe = observer
        self.rng = rng or random.Random()
        if batch_size is None:
            sends_runs = getattr(stages.destination, "send_in_order", None) is not None and not stages.batch
            batch_size = SENT_RUN if sends_runs else ROUND
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.stages.name

    def start(self) -> None:
        self.stages.destination.start()
        self.notify()

    @defer.inlineCallbacks
    def stop(self):
        """Finish the round under way, then close the destination's connections.

        A destination that sends a run itself (``send_in_order``) is stopped first: that ends the
        run after the message in flight, as the dispatcher's own loop ends after the send under way.
        """
        passes = self._stop_passes()
        if getattr(self.stages.destination, "send_in_order", None) is not None:
            yield self.stages.destination.stop()
            yield passes
        else:
            yield passes
            yield self.stages.destination.stop()

    def describe(self) -> str:
        return f"channel {self.channel} destination {self.name}"

    @defer.inlineCallbacks
    def _pass(self):
        retry = self.stages.retry
        head_only = retry.on_error == "block"
        while not self._stopped:
            # With on_error: block, the due run at the head of the queue: sent in order, one at a time,
            # up to the first that is not SENT; the attempts of the whole run are recorded in one write.
            due = yield self.store.due_deliveries(
                self.channel, self.name, now=self.clock(), limit=self.batch_size, head_only=head_only
            )
            if not due:
                next_at = yield self.store.next_due_at(self.channel, self.name, head_only=head_only)
                self._schedule(next_at)
                return
            outcomes: list[tuple[Delivery, DeliveryResult]] = []
            destination = self.stages.destination
            send_batch = getattr(destination, "send_batch", None)
            send_in_order = getattr(destination, "send_in_order", None)
            if self.stages.batch and send_batch is not None and len(due) > 1:
                results = yield send_batch(due)
                outcomes.extend(zip(due, results))
            elif send_in_order is not None:
                # The destination sends the run itself (the MLLP one on its own thread): no reactor turn between messages.
                results = yield send_in_order(due, stop_at_failure=head_only)
                outcomes.extend(zip(due, results))
            else:
                for delivery in due:
                    result = yield destination.send(delivery)
                    outcomes.append((delivery, result))
                    if (result.outcome != Outcome.SENT and head_only) or self._stopped:
                        break
            if not outcomes:  # the destination stopped before sending anything
                return
            yield self._record(outcomes)
            if len(due) < GATHER_BELOW and not self._stopped and not self._urgent():
                yield task.deferLater(self.reactor, GATHER_SECONDS, lambda: None)

    def _record(self, outcomes: Sequence[tuple[Delivery, DeliveryResult]]) -> defer.Deferred:
        now = self.clock()
        attempts = []
        settled = []
        for delivery, result in outcomes:
            outcome = result.outcome
            next_at = None
            reason = result.reason
            if outcome == Outcome.RETRY:
                age = (now - delivery.queued_at).total_seconds() if delivery.queued_at else 0.0
                if self.stages.retry.gives_up(delivery.attempt, age):
                    outcome = Outcome.ERROR
                    reason = f"gave up after {delivery.attempt} attempt(s): {result.reason}"
                else:
                    next_at = now + timedelta(seconds=self.stages.retry.delay(delivery.attempt, self.rng))
            attempts.append(
                AttemptResult(
                    delivery.delivery_id,
                    outcome,
                    now,
                    response=result.response,
                    response_code=result.response_code,
                    reason=reason,
                    next_attempt_at=next_at,
                )
            )
            self._observe(
                "delivery", {"channel": self.channel, "destination": self.name, "outcome": str(outcome)}
            )
            if outcome != Outcome.RETRY:
                settled.append(
                    (
                        delivery,
                        DeliveryResult(outcome, result.response, result.response_code, reason),
                        outcome,
                    )
                )
            if outcome == Outcome.ERROR:
                log.warn(
                    "channel {channel} destination {destination}: delivery {delivery} failed for good: {reason}",
                    channel=self.channel,
                    destination=self.name,
                    delivery=delivery.delivery_id,
                    reason=reason,
                )
        d = self.store.record_attempts(attempts)

        def recorded(_):
            for delivery, result, outcome in settled:
                self.on_settled(delivery, result, outcome)

        d.addCallback(recorded)
        return d

    def _schedule(self, next_at: datetime | None) -> None:
        """Look again when the head is due, and at least every IDLE_POLL_SECONDS."""
        delay = IDLE_POLL_SECONDS if next_at is None else max(0.0, (next_at - self.clock()).total_seconds())
        self._look_again_in(min(IDLE_POLL_SECONDS, delay))
