"""Fakes for channel, dispatcher and destination tests: a store in memory and scripted destinations.

Every store call answers at once (the Deferred has fired), so a test on a ``task.Clock`` runs a
whole pass in one call and waits only where the code waits on the clock. ``FakeStore.pause()``
holds the answers back until ``resume()``, to look at a channel while its store is busy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime

from twisted.internet import defer

from engine.channels.destinations.base import Destination
from engine.channels.journal import NO_JOURNAL
from engine.errors import StoreError
from engine.model import (
    AttemptResult,
    Delivery,
    DeliveryResult,
    NewMessage,
    Outcome,
    ProcessingResult,
    ReceivedMessage,
    Status,
)
from tests.fakes.messages import new_message


@dataclass
class _Queued:
    """A delivery row: its queue, state and next due time."""

    delivery: Delivery
    status: str
    attempts: int
    due_at: datetime


def message_row(n: int, raw: bytes = b"", *, deliveries=None) -> NewMessage:
    """Message number ``n`` of channel adt (control id C000n): RECEIVED, or QUEUED with its ``deliveries``."""
    return new_message(
        raw,
        control_id=f"C{n:04d}",
        status=Status.RECEIVED if deliveries is None else Status.QUEUED,
        deliveries=deliveries,
    )


class FakeStore:
    """The store calls the channels make, on messages and queues held in memory."""

    def __init__(self):
        self.messages: dict[int, NewMessage] = {}
        self.statuses: dict[int, str] = {}
        self.queue: dict[int, _Queued] = {}
        self.attempts: list[list[AttemptResult]] = []  # each record_attempts call
        self.calls: list[str] = []  # the name of every call, in order
        self.failing = False  # every call fails with a StoreError
        self._paused: list[tuple[defer.Deferred, object]] | None = None

    # -- answering ----------------------------------------------------------------------------

    def pause(self) -> None:
        """Hold every answer back until ``resume``."""
        self._paused = []

    def resume(self) -> None:
        """Give the answers held back, in order, and answer at once again."""
        held, self._paused = self._paused or [], None
        for waiter, work in held:
            defer.maybeDeferred(work).chainDeferred(waiter)

    def _answer(self, name: str, work) -> defer.Deferred:
        self.calls.append(name)
        if self.failing:
            return defer.fail(StoreError("the fake store is down"))
        if self._paused is not None:
            waiter = defer.Deferred()
            self._paused.append((waiter, work))
            return waiter
        return defer.maybeDeferred(work)

    # -- messages -----------------------------------------------------------------------------

    def add(self, rows, source_file=None) -> defer.Deferred:
        def work():
            ids = []
            for row in rows:
                message_id = len(self.messages) + 1
                self.messages[message_id] = row
                self.statuses[message_id] = row.status
                for delivery in row.deliveries or ():
                    self._queue(message_id, row.channel, delivery)
                ids.append(message_id)
            return ids

        return self._answer("add", work)

    def reprocess(self, message_ids) -> defer.Deferred:
        def work():
            for message_id in message_ids:
                self.statuses[message_id] = Status.RECEIVED
            return len(message_ids)

        return self._answer("reprocess", work)

    def pending_for_processing(self, channel: str, *, after_id: int = 0, limit: int = 500) -> defer.Deferred:
        def work():
            pending = [
                message_id
                for message_id, row in self.messages.items()
                if row.channel == channel
                and message_id > after_id
                and self.statuses[message_id] == "RECEIVED"
            ]
            return [self._received(message_id) for message_id in sorted(pending)[:limit]]

        return self._answer("pending_for_processing", work)

    def _received(self, message_id: int) -> ReceivedMessage:
        row = self.messages[message_id]
        return ReceivedMessage(
            message_id,
            row.channel,
            row.raw,
            row.charset,
            row.control_id,
            row.received_at,
            row.sending_application,
            row.sending_facility,
            row.message_code,
            row.trigger_event,
        )

    def record_processing(self, results: list[ProcessingResult], lease=None) -> defer.Deferred:
        def work():
            ids = []
            for result in results:
                if self.statuses[result.message_id] != "RECEIVED":
                    continue  # another process took it meanwhile
                self.statuses[result.message_id] = result.status
                channel = self.messages[result.message_id].channel
                ids += [self._queue(result.message_id, channel, d) for d in result.deliveries]
            return ids

        return self._answer("record_processing", work)

    def _queue(self, message_id: int, channel: str, delivery) -> int:
        delivery_id = len(self.queue) + 1
        queued = Delivery(
            delivery_id, message_id, channel, delivery.destination, delivery.control_id, delivery.payload, 1
        )
        due_at = self.messages[message_id].received_at  # due at once
        self.queue[delivery_id] = _Queued(queued, delivery.status, 0, due_at)
        return delivery_id

    # -- queues -------------------------------------------------------------------------------

    def _waiting(self, channel: str, destination: str) -> list[_Queued]:
        return [
            q
            for _, q in sorted(self.queue.items())
            if q.status == "QUEUED" and (q.delivery.channel, q.delivery.destination) == (channel, destination)
        ]

    def due_deliveries(
        self, channel: str, destination: str, *, now: datetime, limit: int, head_only: bool
    ) -> defer.Deferred:
        def work():
            due = []
            for queued in self._waiting(channel, destination):
                if queued.due_at > now:
                    if head_only:
                        break
                    continue
                due.append(replace(queued.delivery, attempt=queued.attempts + 1))
                if len(due) == limit:
                    break
            return due

        return self._answer("due_deliveries", work)

    def next_due_at(self, channel: str, destination: str, *, head_only: bool = False) -> defer.Deferred:
        def work():
            waiting = self._waiting(channel, destination)
            if not waiting:
                return None
            return waiting[0].due_at if head_only else min(q.due_at for q in waiting)

        return self._answer("next_due_at", work)

    def record_attempts(self, results: list[AttemptResult], lease=None) -> defer.Deferred:
        def work():
            # A replayed attempt (from the journal) counts only once, as in the store.
            attempts = [a for a in results if a.attempt in (None, self.queue[a.delivery_id].attempts + 1)]
            self.attempts.append(attempts)
            for attempt in attempts:
                queued = self.queue[attempt.delivery_id]
                queued.attempts += 1
                if attempt.outcome == Outcome.RETRY:
                    queued.due_at = attempt.next_attempt_at
                else:
                    queued.status = str(attempt.outcome)

        return self._answer("record_attempts", work)

    def delivery_states(self) -> list[tuple[str, int]]:
        """(status, attempts) of every delivery, in queue order."""
        return [(q.status, q.attempts) for _, q in sorted(self.queue.items())]


class ScriptedDestination(Destination):
    """Answers each send with the next scripted outcome (SENT when none is left).

    Notes the control ids sent.
    """

    def __init__(self, *outcomes: Outcome, name: str = "lab"):
        super().__init__(name)
        self.outcomes = list(outcomes)
        self.sent: list[str] = []
        self.events: list[str] = []  # start, stop

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> defer.Deferred:
        self.events.append("stop")
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
    """Sends a whole run itself and ends it at stop(), as the mllp destination does.

    Notes each run's length.
    """

    round_size = 250
    stop_before_pass = True

    def __init__(self, *outcomes: Outcome, name: str = "lab"):
        super().__init__(*outcomes, name=name)
        self.runs: list[int] = []

    def send_run(
        self, deliveries, *, stop_at_failure: bool, stopped=None, journal=NO_JOURNAL
    ) -> defer.Deferred:
        self.runs.append(len(deliveries))
        results = []
        for delivery in deliveries:
            refused = journal.note_sending(delivery)
            if refused is not None:
                results.append(refused)
                break
            result = self.send(delivery).result
            journal.answered(delivery, result)
            results.append(result)
            if stop_at_failure and result.outcome != Outcome.SENT:
                break
        journal.flush()
        return defer.succeed(results)


class GatedDestination(ScriptedDestination):
    """Each send waits until the test answers it with ``answer()``.

    A send in flight, for as long as needed.
    """

    def __init__(self, name: str = "lab"):
        super().__init__(name=name)
        self.in_flight: list[defer.Deferred] = []

    def send(self, delivery: Delivery) -> defer.Deferred:
        self.sent.append(delivery.control_id)
        waiter = defer.Deferred()
        self.in_flight.append(waiter)
        return waiter

    def answer(self, outcome: Outcome = Outcome.SENT) -> None:
        """Answer the oldest send in flight."""
        self.in_flight.pop(0).callback(DeliveryResult(outcome, reason=str(outcome)))


def journal_lines(path) -> list[list]:
    """The entries of a journal file as its lines say (the file holds zeros past its last line)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\0", 1)[0].splitlines()]
