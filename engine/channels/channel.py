"""A channel: its messages taken in order of receipt, processed, and handed to its dispatchers.

A ``Channel`` owns the order of its messages. The intake offers each message before storing it
(``receive``): the channel processes it at once when nothing of the channel waits for a pass,
so it is stored processed with its deliveries; otherwise it is stored RECEIVED and a pass
processes it in turn. Passes also recover what a restart left RECEIVED. Once deliveries settle,
the senders waiting for them (``respond: after_processing``) are answered.

A channel processes only while this process holds its lease (``leases.channel_key``): passes pause
when it is lost, and its results are written under the lease's token.

When other processes share the store (``wakeups``), the channel tells them what it left for them
(its processing, its queues) and hears what they left for it; a sender waiting here is answered
from the store when the deliveries were done elsewhere (on their wake-up, and a short poll). A
process without the delivery role is given no destinations: its channel has no dispatchers.
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
from engine.channels.leases import LOCAL_LEASES, Leases, channel_key, queue_key
from engine.channels.passes import IDLE_POLL_SECONDS, Passes
from engine.channels.pausing import Controls
from engine.channels.pipeline import Pipeline
from engine.channels.wakeups import Wakeups, settled_key, urgent_key
from engine.lograte import LogRate
from engine.model import Delivery, DeliveryResult, ProcessingResult, Status, roll_up, utc_now

if TYPE_CHECKING:
    from engine.channels.spec import ChannelConfig

__all__ = ["OUTCOME_POLL_SECONDS", "PASS_SIZE", "Channel", "Receipt", "may_process_at_intake"]

log = Logger()

#: While senders wait and other processes may settle their deliveries, the store is read this often
#: for their outcomes: a lost wake-up delays an answer by this much at most.
OUTCOME_POLL_SECONDS = 0.05
#: At most one warning this often when reading the outcomes fails (the poll tries again).
OUTCOME_WARN_SECONDS = 60.0
#: Messages a pass processes and records in one transaction. Its results (a status, deliveries and
#: events a message) are one write on the store, whose file lock other processes' intake commits
#: wait behind, and processing them is one turn of this reactor: 500 measured an intake p99 of
#: ~100 ms with two intake processes, 100 ~70 ms (docs/performance.md).
PASS_SIZE = 100


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
        batch_size: int = PASS_SIZE,
        clock: Callable[[], datetime] = utc_now,
        observer: Callable[[str, dict], None] | None = None,
        rng: random.Random | None = None,
        leases: Leases = LOCAL_LEASES,
        wakeups: Wakeups | None = None,
        outcome_poll_seconds: float = OUTCOME_POLL_SECONDS,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
        controls: Controls | None = None,
    ):
        """``destinations``: each destination with its retry policy, in the order of the pipeline's.

        ``journals``: where each destination's queue keeps its journal. ``leases``: whether this
        process may process the channel and drain each of its queues now. ``wakeups``: other
        processes share the store (None: this process alone does all of the channel's work).
        ``idle_poll_seconds``: how often the channel and its dispatchers look at the store when idle.
        ``controls``: the pauses the process's ``PauseWatch`` applies to the dispatchers (None: none).
        """
        super().__init__(
            reactor, leases=leases, key=channel_key(config.name), idle_poll_seconds=idle_poll_seconds
        )
        self.name = config.name
        self.store = store
        self.pipeline = pipeline
        self.batch_size = batch_size
        self._observe = observer or (lambda event, fields: None)
        self._at_intake = may_process_at_intake(config)
        # False when several processes take in this channel's messages (nodes of a cluster): each
        # message is then stored RECEIVED, and the holder of the lease processes them in id order.
        self.at_intake_allowed = True
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
                leases=leases,
                wakeups=wakeups,
                idle_poll_seconds=idle_poll_seconds,
                controls=controls,
            )
            for destination, retry in destinations
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
        # Deliveries settled by another process: waiters answered from the store (see _look_up_outcomes).
        self._wakeups = wakeups
        self._outcome_poll_seconds = outcome_poll_seconds
        self._outcome_timer = None
        self._looking = self._look_again = False
        self._outcome_warnings = LogRate(OUTCOME_WARN_SECONDS, reactor.seconds)

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatchers; once the lease is held, process what was left RECEIVED (recovery)."""
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        self.work_under_lease(
            self._wakeups,
            {channel_key(self.name): self.notify, settled_key(self.name): self._look_up_outcomes},
        )

    @defer.inlineCallbacks
    def stop(self):
        """Finish the pass under way, give the lease back, then stop the dispatchers and destinations."""
        self.stop_hearing()
        if self._outcome_timer is not None and self._outcome_timer.active():
            self._outcome_timer.cancel()
        yield self.stop_passes()
        yield self.leases.unwatch(self.key)
        yield defer.gatherResults([d.stop() for d in self.dispatchers.values()], consumeErrors=True)

    def lease_acquired(self) -> None:
        # Another process may have processed meanwhile: a pass must find nothing left first.
        self._caught_up = False
        self.resume_passes()

    def lease_lost(self) -> defer.Deferred:
        self._caught_up = False
        return self.pause_passes()

    def describe(self) -> str:
        return f"channel {self.name}"

    # -- what the intake (and a channel destination) tells the channel --------------------------

    @property
    def processes_at_intake(self) -> bool:
        """Whether ``receive`` processes a message now: nothing of this channel waits for a pass."""
        return (
            self._at_intake
            and self.at_intake_allowed
            and self._caught_up
            and not self._held
            and not self._tracked
            and self.may_work
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
        held = False
        processed = []
        for receipt, message_id in stored:
            if receipt.result is None:
                if receipt.channel is self:
                    self._held -= 1
                if self.may_work:  # only a pass forgets it; one starts at each acquisition anyway
                    self._tracked.add(message_id)
                held = True
            else:
                self._observe("processed", {"channel": self.name, "status": str(receipt.result.status)})
                processed.append(receipt.result)
        if held:
            self.notify()
            if self._wakeups is not None:
                self._wakeups.send(channel_key(self.name))
        if processed:
            self._wake_queues(processed)

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
        self._poll_outcomes()

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

    # -- processing ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def run_pass(self):
        after_id = 0
        lease = self.leases.token(self.key)  # the results of this pass are written under it
        while self.may_work:
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
            delivery_ids = yield self.store.record_processing(results, lease)
            self._tracked.difference_update(result.message_id for result in results)
            after_id = rows[-1].id
            self._after_recording(results, delivery_ids)

    def _after_recording(self, results: Sequence[ProcessingResult], delivery_ids: Sequence[int]) -> None:
        if len(delivery_ids) != sum(len(r.deliveries) for r in results):
            # Some results were skipped (another process handled those messages): the ids cannot be
            # matched to deliveries, so waiters of this pass are answered from the store (with
            # wake-ups) or on their timeout instead.
            self._wake_queues(results)
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
        self._wake_queues(results)

    def _wake_queues(self, results: Sequence[ProcessingResult]) -> None:
        """Deliveries were recorded for these results: wake the dispatchers, here and (wake-ups) elsewhere."""
        for dispatcher in self.dispatchers.values():
            dispatcher.notify()
        if self._wakeups is None:
            return
        queued: dict[str, bool] = {}  # destination -> whether a sender waits for it
        for result in results:
            waited_for = result.message_id in self._waiters
            for delivery in result.deliveries:
                if delivery.status == Status.QUEUED:
                    queued[delivery.destination] = queued.get(delivery.destination, False) or waited_for
        for destination, urgent in queued.items():
            self._wakeups.send((urgent_key if urgent else queue_key)(self.name, destination))

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

    # -- deliveries settled by another process ---------------------------------------------------

    def _poll_outcomes(self) -> None:
        """Look at the waiters' outcomes in a moment, when another process may settle them."""
        if self._wakeups is None or not self._waiters or self.closed or self._looking:
            return
        if self._outcome_timer is None or not self._outcome_timer.active():
            self._outcome_timer = self.reactor.callLater(self._outcome_poll_seconds, self._look_up_outcomes)

    def _look_up_outcomes(self) -> None:
        """Answer the waiters whose messages are settled in the store: one read for them all."""
        if self._looking:
            self._look_again = True
            return
        if not self._waiters or self.closed:
            return
        if self._outcome_timer is not None and self._outcome_timer.active():
            self._outcome_timer.cancel()
        self._looking = True
        d = self.store.outcomes(list(self._waiters))
        d.addCallbacks(self._answer_outcomes, self._outcomes_failed)
        d.addBoth(self._looked)

    def _answer_outcomes(self, outcomes: dict[int, tuple[Status, str, list[DeliveryResult]]]) -> None:
        for message_id, outcome in outcomes.items():
            self._open_deliveries.pop(message_id, None)
            self._results.pop(message_id, None)
            waiter = self._waiters.pop(message_id, None)
            if waiter is not None:
                waiter.callback(outcome)

    def _outcomes_failed(self, failure) -> None:
        if (count := self._outcome_warnings.due()) is not None:
            log.warn(
                "channel {channel}: reading the outcomes senders wait for failed {count} time(s): {error}",
                channel=self.name,
                count=count,
                error=failure.getErrorMessage(),
            )

    def _looked(self, _) -> None:
        self._looking = False
        if self._look_again:
            self._look_again = False
            self._look_up_outcomes()
        else:
            self._poll_outcomes()
