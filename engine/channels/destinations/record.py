"""The ``record`` destination: each delivered message is applied to the unified patient record.

The work runs on the store's record thread (``store.write_record``): on SQLite the record has a
file of its own, whose write lock intake's commits never take, and its writes run in order on a
thread beside the store's writer (on PostgreSQL, the writer itself). Outcomes:

- SENT: applied (reason ``patient <id>``), already applied, or nothing for the record (unknown
  event, no PID: the reason says so);
- ERROR: the payload cannot be read, or its content cannot be applied (``RecordError``), or an
  unexpected failure that a retry would repeat;
- RETRY: the database is locked or unreachable, or the store is not running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.destinations.base import Destination
from engine.channels.journal import NO_JOURNAL, Journal
from engine.errors import HL7Error, RecordError, StoreError
from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.model import Delivery, DeliveryResult, Outcome
from engine.record.identity import DEFAULT_RULE, IdentityRule
from engine.record.ingest import IngestResult, RecordIngestor

__all__ = [
    "CHUNK_MESSAGES",
    "CHUNK_SECONDS",
    "MAX_CHUNK_MESSAGES",
    "MIN_CHUNK_MESSAGES",
    "SHARED_CHUNK_SECONDS",
    "RecordDestination",
    "next_chunk",
]

log = Logger(namespace="engine.record")

#: On SQLite, how long one call (one transaction of the record) should take: the record file's
#: write lock is held that long. Intake's commits no longer wait for it (they take the store
#: file's); only the operator's record actions and another process's record writes do. At 5 ms a
#: chunk was about 7 messages and its commit a seventh of the apply; at 50 ms it is the
#: dispatcher's whole round (100) at the measured speeds, and draining cost 10-20 % less CPU a
#: message (docs/performance.md, "The record in a file of its own"); 100 ms measured the same.
#: PostgreSQL commits received messages on a writer of their own: a run is one call there.
CHUNK_SECONDS = 0.05
#: The same where the record shares the store's file (a SQLite store opened by a ``file:`` URI,
#: which gets no second file): there intake's commits wait for the chunk, as before the record had
#: a file of its own.
SHARED_CHUNK_SECONDS = 0.005
#: Messages in the first chunk (about 0.5 ms each on the benchmark machine); the next ones are
#: sized from how long the last took, between MIN_CHUNK_MESSAGES (a transaction a message would
#: cost more than their apply: the pages of every index are written again) and MAX_CHUNK_MESSAGES.
CHUNK_MESSAGES = 8
MIN_CHUNK_MESSAGES = 4
MAX_CHUNK_MESSAGES = 200


class RecordDestination(Destination):
    """Applies messages to the patient record through ``store.write_record``, a run in chunks."""

    def __init__(
        self,
        name: str,
        *,
        store,
        reactor,
        default_charset: str = "utf-8",
        identity_rule: IdentityRule | None = DEFAULT_RULE,
        trust_cross_references: frozenset[str] | None = None,
        local_timezone: tzinfo = UTC,
    ):
        super().__init__(name)
        self._trust = trust_cross_references
        self._store = store
        self._reactor = reactor
        self._default_charset = default_charset
        self._identity_rule = identity_rule
        self._local_timezone = local_timezone
        self._ingestor: RecordIngestor | None = None
        self._chunk = CHUNK_MESSAGES  # messages in the next writer call, sized to take CHUNK_SECONDS

    # Nothing to open or close (start, stop): the record lives in the store's database, and writes
    # in flight belong to the store, which finishes them before it stops.

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Apply one message; fires with a DeliveryResult and never errbacks."""
        return self.send_run([delivery], stop_at_failure=False).addCallback(lambda results: results[0])

    def send_run(
        self,
        deliveries: Sequence[Delivery],
        *,
        stop_at_failure: bool,
        stopped: Callable[[], bool] | None = None,
        journal: Journal = NO_JOURNAL,
    ) -> defer.Deferred:
        """Apply the messages in order, in writer calls of about CHUNK_SECONDS each (``apply_many``).

        Fires with one DeliveryResult each, never errbacks: every one is attempted, whatever
        ``stop_at_failure`` says. A message that cannot be read or applied is an ERROR of its own;
        the others are applied. When the database cannot be written (locked, unreachable, store
        stopped) the chunk that found it so and every one after it are RETRY. Nothing is
        journalled: the record keeps which messages it applied, in the same transaction, so one
        applied again after a crash is found "already applied" and changes nothing.
        """
        return defer.ensureDeferred(self._apply_in_chunks(list(deliveries)))

    async def _apply_in_chunks(self, deliveries: list[Delivery]) -> list[DeliveryResult]:
        """Read and apply the deliveries a chunk at a time, one writer call (transaction) each, in order.

        Each chunk is sized to take about CHUNK_SECONDS (``next_chunk``), so the record file's
        lock is never held long by one, and the reactor reads a chunk's payloads, not a whole
        run's, at a time. The next chunk is asked for once the previous one committed: when the
        database cannot be written, that chunk and every one after it are RETRY, never applied
        ahead of it.
        """
        results: list[DeliveryResult] = []
        start = 0
        while start < len(deliveries):
            try:
                one_writer = self._ingestor_for_store().engine.dialect.name == "sqlite"
            except StoreError:
                one_writer = True  # the write below fails as it should
            chunk = deliveries[start : start + (self._chunk if one_writer else len(deliveries))]
            start += len(chunk)
            outcomes = dict(enumerate(self._readings(chunk)))
            messages = {
                position: reading for position, reading in outcomes.items() if isinstance(reading, tuple)
            }
            if messages:
                try:
                    ingestor = self._ingestor_for_store()
                    took, applied = await self._store.write_record(
                        _timed, ingestor.apply_many, list(messages.values())
                    )
                except Exception as error:  # StoreError, or a bug: this one and every one after it
                    results.extend(
                        outcome if isinstance(outcome, DeliveryResult) else self._failed(error, delivery)
                        for outcome, delivery in zip(outcomes.values(), chunk)
                    )
                    results.extend(self._failed(error, delivery) for delivery in deliveries[start:])
                    return results
                if one_writer:
                    aim = CHUNK_SECONDS if self._store.record_apart else SHARED_CHUNK_SECONDS
                    self._chunk = next_chunk(len(applied), took, aim)
                for position, outcome in zip(messages, applied):
                    outcomes[position] = (
                        _applied(outcome)
                        if isinstance(outcome, IngestResult)
                        else self._failed(outcome, chunk[position])
                    )
            results.extend(outcomes.values())
        return results

    def _readings(self, deliveries: Sequence[Delivery]) -> list[tuple | DeliveryResult]:
        """Each delivery read: (message id, message, received at) for the ingestor, or its ERROR."""
        readings: list[tuple | DeliveryResult] = []
        for delivery in deliveries:
            try:
                message = Message.parse(decode(delivery.payload, self._default_charset).text)
            except HL7Error as error:
                readings.append(
                    DeliveryResult(
                        Outcome.ERROR, reason=f"the payload is not a readable HL7 message: {error}"
                    )
                )
                continue
            received_at = delivery.queued_at or datetime.fromtimestamp(self._reactor.seconds(), UTC)
            readings.append((delivery.message_id, message, received_at))
        return readings

    def _ingestor_for_store(self) -> RecordIngestor:
        if self._ingestor is None:
            self._ingestor = RecordIngestor(
                self._store.repository.engine,
                identity_rule=self._identity_rule,
                trust_cross_references=self._trust,
                local_timezone=self._local_timezone,
            )
        return self._ingestor

    def _failed(self, error: BaseException, delivery: Delivery) -> DeliveryResult:
        cause = error.__cause__ if isinstance(error, StoreError) else error
        if isinstance(cause, RecordError):
            return DeliveryResult(Outcome.ERROR, reason=f"cannot be applied to the patient record: {cause}")
        if isinstance(error, StoreError) and (error.transient or cause is None):
            return DeliveryResult(Outcome.RETRY, reason=str(error))
        log.failure(
            "applying message {message_id} to the patient record failed",
            Failure(error),
            message_id=delivery.message_id,
            destination=self.name,
        )
        return DeliveryResult(Outcome.ERROR, reason=f"applying to the patient record failed: {error}")


def next_chunk(size: int, took: float, aim: float = CHUNK_SECONDS) -> int:
    """The messages of the next chunk, after ``size`` took ``took`` seconds: aimed at ``aim`` seconds.

    At most twice the last, so that one fast chunk (messages already applied) does not make the
    next one hold the lock long; between MIN_CHUNK_MESSAGES and MAX_CHUNK_MESSAGES.
    """
    aimed = int(size * aim / took) if took > 0 else MAX_CHUNK_MESSAGES
    return max(MIN_CHUNK_MESSAGES, min(aimed, 2 * size, MAX_CHUNK_MESSAGES))


def _timed(function: Callable, *args) -> tuple[float, Any]:
    """(seconds it took, result) of ``function(*args)``, on the thread that runs it."""
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def _applied(result: IngestResult) -> DeliveryResult:
    if result.already_applied:
        return DeliveryResult(Outcome.SENT, reason=f"already applied: {result.detail}")
    if not result.applied:
        return DeliveryResult(Outcome.SENT, reason=f"nothing recorded: {result.detail}")
    return DeliveryResult(Outcome.SENT, reason=result.detail)
