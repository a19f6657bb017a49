"""The ``record`` destination: each delivered message is applied to the unified patient record.

The work runs on the store's single writer thread (``store.write``), so SQLite sees one writer
and record writes are ordered with every other write of the engine. Outcomes:

- SENT: applied (reason ``patient <id>``), already applied, or nothing for the record (unknown
  event, no PID: the reason says so);
- ERROR: the payload cannot be read, or its content cannot be applied (``RecordError``), or an
  unexpected failure that a retry would repeat;
- RETRY: the database is locked or unreachable, or the store is not running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo

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

__all__ = ["RecordDestination"]

log = Logger(namespace="engine.record")


class RecordDestination(Destination):
    """Applies messages to the patient record through ``store.write``, a whole run in one writer call."""

    def __init__(
        self,
        name: str,
        *,
        store,
        reactor,
        default_charset: str = "utf-8",
        identity_rule: IdentityRule | None = DEFAULT_RULE,
        local_timezone: tzinfo = UTC,
    ):
        super().__init__(name)
        self._store = store
        self._reactor = reactor
        self._default_charset = default_charset
        self._identity_rule = identity_rule
        self._local_timezone = local_timezone
        self._ingestor: RecordIngestor | None = None

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
        """Apply the messages in order, together in one writer call (``RecordIngestor.apply_many``).

        Fires with one DeliveryResult each, never errbacks: every one is attempted, whatever
        ``stop_at_failure`` says, since one call applies them all. A message that cannot be read or
        applied is an ERROR of its own; the others are applied. When the database cannot be written
        (locked, unreachable, store stopped) every one is RETRY. Nothing is journalled: the record
        keeps which messages it applied, in the same transaction, so one applied again after a
        crash is found "already applied" and changes nothing.
        """
        deliveries = list(deliveries)
        results: list[DeliveryResult | None] = [None] * len(deliveries)
        readable: list[int] = []  # positions of the deliveries handed to the ingestor
        messages = []
        for index, delivery in enumerate(deliveries):
            try:
                message = Message.parse(decode(delivery.payload, self._default_charset).text)
            except HL7Error as error:
                results[index] = DeliveryResult(
                    Outcome.ERROR, reason=f"the payload is not a readable HL7 message: {error}"
                )
                continue
            received_at = delivery.queued_at or datetime.fromtimestamp(self._reactor.seconds(), UTC)
            readable.append(index)
            messages.append((delivery.message_id, message, received_at))
        if not messages:
            return defer.succeed(results)
        try:
            ingestor = self._ingestor_for_store()
        except StoreError as error:
            applying = defer.fail(error)
        else:
            applying = self._store.write(ingestor.apply_many, messages)

        def applied(outcomes: list) -> list[DeliveryResult]:
            for index, outcome in zip(readable, outcomes):
                results[index] = (
                    _applied(outcome)
                    if isinstance(outcome, IngestResult)
                    else self._failed(outcome, deliveries[index])
                )
            return results

        def failed(failure: Failure) -> list[DeliveryResult]:
            for index in readable:
                results[index] = self._failed(failure.value, deliveries[index])
            return results

        return applying.addCallbacks(applied, failed)

    def _ingestor_for_store(self) -> RecordIngestor:
        if self._ingestor is None:
            self._ingestor = RecordIngestor(
                self._store.repository.engine,
                identity_rule=self._identity_rule,
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


def _applied(result: IngestResult) -> DeliveryResult:
    if result.already_applied:
        return DeliveryResult(Outcome.SENT, reason=f"already applied: {result.detail}")
    if not result.applied:
        return DeliveryResult(Outcome.SENT, reason=f"nothing recorded: {result.detail}")
    return DeliveryResult(Outcome.SENT, reason=result.detail)
