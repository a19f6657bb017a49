"""A channel: its messages taken in order of receipt, processed, and handed to its dispatchers.

A ``Channel`` owns the order of its messages. The intake offers each message before storing it
(``receive``): the channel processes it at once when nothing of the channel waits for a pass,
so it is stored processed with its deliveries; otherwise it is stored RECEIVED and a pass
processes it in turn. Passes also recover what a restart left RECEIVED. Once deliveries settle,
the senders waiting for them (``respond: after_processing``) are answered.

A channel may do only part of this in its process (the engine's roles): without ``processing`` it
never processes (messages are stored RECEIVED for the process that does), without ``delivery`` it
has no dispatchers (another process drains its queues, and the senders waiting for an outcome
learn it from the store). New work for a queue or for the channel's processing is announced
through one hook, ``on_new_work``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger

from engine.channels.destinations.base import Destination
from engine.channels.dispatcher import Dispatcher, RetryPolicy
from engine.channels.journal import Journals
from engine.channels.leases import channel_key, queue_key
from engine.channels.passes import IDLE_POLL_SECONDS, Passes
from engine.channels.pipeline import Pipeline
from engine.model import Delivery, DeliveryResult, ProcessingResult, Status, roll_up, utc_now

if TYPE_CHECKING:
    from engine.channels.spec import ChannelConfig

__all__ = ["OUTCOME_POLL_SECONDS", "Channel", "Receipt", "may_process_at_intake"]

log = Logger()

#: Without the delivery role, how often the store is asked for the outcome of messages senders wait for.
OUTCOME_POLL_SECONDS = 0.020


def may_process_at_intake(config: ChannelConfig) -> bool:
    """Whether the channel's messages may be processed before they are stored.

    Not when the answer waits for the destinations (after_processing: the waiters follow a pass),
    nor with duplicate detection (what is a duplicate is known only after the lookup).
    """
    return config.respond == "after_store" and not config.duplicate_window_seconds


class Receipt:
    """What a channel made of a message offered to it; report back with ``Channel.stored`` or ``dropped``.

    ``result`` is the ProcessingResult when the message was processed at once (store it with its
    deliveries), None when it waits its turn (store it RECEIVED).
    """

    __slots__ = ("channel", "result")

    def __init__(self, channel: Channel, result: ProcessingResult | None):
        self.channel = channel
        self.result = result


class Channel(Passes):
    """Processes one channel's messages in order of receipt and feeds its dispatchers."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        pipeline: Pipeline,
        destinations: Sequence[tuple[Destination, RetryPolicy]],
        store,
        journals: Journals,
        reactor,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utc_now,
        observer: Callable[[str, dict], None] | None = None,
        rng: random.Random | None = None,
        processing: bool = True,
        delivery: bool = True,
        poll_seconds: float = IDLE_POLL_SECONDS,
        tell_others: Callable[[Sequence[str]], None] | None = None,
        sole_intake: bool = True,
    ):
        """``destinations``: each destination with its retry policy, in the order of the pipeline's.

        ``journals``: where each destination's queue keeps its journal. ``processing``/``delivery``:
        whether this process processes the channel's messages / drains its queues; its passes and
        queues look at the store every ``poll_seconds`` when idle. ``tell_others(keys)``: announces
        new work to the other processes (wake-ups); None when every role lives in this process.
        ``sole_intake``: no other process takes in this channel's messages; else none is processed
        at intake (the processing role takes all of them in id order, which keeps each sender's).
        """
        super().__init__(reactor, idle_poll=poll_seconds)
        self.name = config.name
        self.processing = processing
        self.delivery = delivery
        self._tell_others = tell_others
        #: The keys of this channel's queues, one per destination of the pipeline.
        self.queue_keys = tuple(queue_key(self.name, stage.name) for stage in pipeline.destinations)
        self.store = store
        self.pipeline = pipeline
        self.batch_size = batch_size
        self._observe = observer or (lambda event, fields: None)
        self._at_intake = sole_intake and may_process_at_intake(config)
        self.dispatchers = {
            destination.name: Dispatcher(
                self.name,
                destination,
                retry,
                store=store,
                journal=journals.journal(self.name, destination.name),
                reactor=reactor,
                clock=clock,
                on_settled=self._delivery_settled,
                observer=self._observe,
                rng=rng,
                urgent=lambda: bool(self._waiters),
                idle_poll=poll_seconds,
            )
            for destination, retry in (destinations if delivery else ())
        }
        # Processing at intake keeps the order of receipt only while nothing of this channel waits
        # for a pass: not before a pass has found nothing left from before (recovery), nor while
        # messages offered to it are on their way to the store as RECEIVED (held) or stored and
        # not yet processed by a pass (tracked).
        self._caught_up = False
        self._held = 0
        self._tracked: set[int] = set()
        # after_processing: message id -> waiter, and the deliveries each message still waits for
        self._waiters: dict[int, defer.Deferred] = {}
        self._open_deliveries: dict[int, set[int]] = {}
        self._results: dict[int, list[DeliveryResult]] = {}
        self._outcome_poll = None  # without delivery: the timer of the next read of waiters' outcomes

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatchers and process whatever was left RECEIVED (recovery after a restart)."""
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        if self.processing:
            self.notify()

    @defer.inlineCallbacks
    def stop(self):
        """Finish the pass under way, then stop the dispatchers and their destinations."""
        yield self.stop_passes()
        if self._outcome_poll is not None and self._outcome_poll.active():
            self._outcome_poll.cancel()
        yield defer.gatherResults([d.stop() for d in self.dispatchers.values()], consumeErrors=True)

    def describe(self) -> str:
        return f"channel {self.name}"

    # -- what the intake (and a channel destination) tells the channel --------------------------

    @property
    def processes_at_intake(self) -> bool:
        """Whether ``receive`` processes a message now: nothing of this channel waits for a pass."""
        return (
            self.processing
            and self._at_intake
            and self._caught_up
            and not self._held
            and not self._tracked
            and not self.stopped
        )

    def receive(self, text: str, codec: str, control_id: str) -> Receipt:
        """Offer a message about to be stored for this channel: processed now, or held for a pass.

        Held until this channel has caught up (a pass found nothing left), while other messages
        wait for a pass, when the channel never processes at intake (``may_process_at_intake``),
        and after a stage failed unexpectedly (a pass reports that as it always does).
        """
        if self.processes_at_intake:
            try:
                return Receipt(self, self.pipeline.process_text(0, text, codec, control_id))
            except Exception:
                log.failure(
                    "channel {channel}: processing at intake failed; a pass processes the message",
                    channel=self.name,
                )
        return self.hold()

    def hold(self) -> Receipt:
        """Take note of a message to be stored RECEIVED for this channel: a pass processes it in turn."""
        self._held += 1
        return Receipt(self, None)

    def stored(self, stored: Sequence[tuple[Receipt, int]]) -> None:
        """The messages of these receipts were committed, with these ids: wake what must take them on.

        A receipt may come from the channel this one replaced on a reload: its messages are taken
        on here all the same (what that one held is no longer counted anywhere).
        """
        held = processed = False
        for receipt, message_id in stored:
            if receipt.result is None:
                if receipt.channel is self:
                    self._held -= 1
                if self.processing:  # only a pass forgets it: elsewhere it would be kept for good
                    self._tracked.add(message_id)
                held = True
            else:
                self._observe("processed", {"channel": self.name, "status": str(receipt.result.status)})
                processed = True
        if held:
            self.on_new_work((channel_key(self.name),))
        if processed:
            self.on_new_work(self.queue_keys)

    def on_new_work(self, keys: Sequence[str]) -> None:
        """Work named by ``keys`` (this channel's or its queues') was committed: wake whoever does it.

        Here: the channel's passes and dispatchers of this process; elsewhere: ``tell_others``.
        """
        for key in keys:
            if key == channel_key(self.name):
                if self.processing:
                    self.notify()
                continue
            for dispatcher in self.dispatchers.values():
                if key == queue_key(self.name, dispatcher.name):
                    dispatcher.notify()
        if self._tell_others is not None:
            self._tell_others(keys)

    def dropped(self, receipt: Receipt) -> None:
        """The message of this receipt was not stored for processing (the store failed, or a duplicate)."""
        if receipt.result is None:
            self._held -= 1

    def wait_for(self, message_id: int, timeout: float) -> defer.Deferred:
        """Fires with the final (status, reason, results) of a message once processing and delivery settle.

        Errbacks with ``defer.TimeoutError`` after ``timeout`` seconds, and the channel stops waiting.
        """
        waiter = defer.Deferred()
        self._waiters[message_id] = waiter
        timer = self.reactor.callLater(timeout, self._stop_waiting, message_id)
        if not self.delivery:
            self._poll_outcomes_soon()

        def settled(result):
            if timer.active():
                timer.cancel()
            return result

        return waiter.addCallback(settled)

    def _stop_waiting(self, message_id: int) -> None:
        waiter = self._waiters.pop(message_id, None)
        self._open_deliveries.pop(message_id, None)
        self._results.pop(message_id, None)
        if waiter is not None and not waiter.called:
            waiter.errback(defer.TimeoutError("no processing outcome in time"))

    def _poll_outcomes_soon(self) -> None:
        if self._outcome_poll is None or not self._outcome_poll.active():
            self._outcome_poll = self.reactor.callLater(OUTCOME_POLL_SECONDS, self._poll_outcomes)

    def _poll_outcomes(self) -> None:
        """Without delivery: one read of the outcomes senders wait for; again while any of them waits."""
        d = self.store.settled_outcomes(sorted(self._waiters))

        def answer(outcomes) -> None:
            for message_id, settled in outcomes.items():
                waiter = self._waiters.pop(message_id, None)
                self._open_deliveries.pop(message_id, None)
                self._results.pop(message_id, None)
                if waiter is not None and not waiter.called:
                    waiter.callback(settled)

        def failed(failure) -> None:  # the waiters' timeouts answer them if the store stays away
            log.warn(
                "channel {channel}: cannot read the outcome of waiting messages: {error}",
                channel=self.name,
                error=failure.getErrorMessage(),
            )

        def again(_) -> None:
            if self._waiters and not self.stopped:
                self._poll_outcomes_soon()

        d.addCallbacks(answer, failed).addBoth(again)

    # -- processing ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def run_pass(self):
        after_id = 0
        while not self.stopped:
            # Committed before this read, so the read sees them if they are still RECEIVED.
            stored_before = set(self._tracked)
            rows = yield self.store.pending_for_processing(
                self.name, after_id=after_id, limit=self.batch_size
            )
            if not rows:
                self._tracked -= stored_before
                self._caught_up = True
                return
            results = [self.pipeline.process(row) for row in rows]
            delivery_ids = yield self.store.record_processing(results)
            self._tracked.difference_update(result.message_id for result in results)
            after_id = rows[-1].id
            self._after_recording(results, delivery_ids)

    def _after_recording(self, results: Sequence[ProcessingResult], delivery_ids: Sequence[int]) -> None:
        if len(delivery_ids) != sum(len(r.deliveries) for r in results):
            # Some results were skipped (another process handled those messages): the ids cannot be
            # matched to deliveries, so waiters of this pass are answered on their timeout instead.
            self.on_new_work(self.queue_keys)
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
            if queued and self.delivery:
                self._open_deliveries[result.message_id] = queued
                self._results[result.message_id] = []
            elif not queued:
                del self._waiters[result.message_id]
                waiter.callback((result.status, result.reason, []))
        self.on_new_work(self.queue_keys)

    def _delivery_settled(self, delivery: Delivery, result: DeliveryResult) -> None:
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
