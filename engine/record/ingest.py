"""Apply HL7 messages to the unified patient record, in transactions (event semantics: docs/record.md).

``RecordIngestor`` owns the transactions of messages: ``apply``, ``apply_many`` (a batch, and the
refusal of the messages in it that cannot be applied); an operator's (merge, link, unmerge, ...)
are ``engine.record.operations``'. What a message does to the record is
its family's (engine/record/apply/). ``RecordIngestor.apply`` blocks: run it on the store's writer
thread (``RecordDestination`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from engine.errors import EngineError, StoreError
from engine.hl7.message import Message
from engine.model import require_aware, utc_now
from engine.record import schema
from engine.record.apply.adt import AdtApplication, IdentityApplication, LinkApplication, MergeApplication
from engine.record.apply.common import Application
from engine.record.apply.dft import DftApplication
from engine.record.apply.oru import OruApplication
from engine.record.apply.siu import SiuApplication
from engine.record.extract import read_message
from engine.record.identity import DEFAULT_RULE, IdentityRule
from engine.record.pending import Pending, RowsRefused
from engine.record.writer import Statements, Writer
from engine.store.cipher import cipher_of
from engine.store.driver import TableCursor, store_errors
from engine.store.schema import messages

__all__ = ["IngestResult", "RecordIngestor"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What applying one message did; ``detail`` names ids and counts, never patient data."""

    message_id: int
    event: str
    patient_id: int | None
    applied: bool
    detail: str
    already_applied: bool = False


_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
# The family that applies each (MSH-9.1, trigger) the record keeps.
_FAMILIES: dict[tuple[str, str], type[Application]] = {
    (family.code, trigger): family
    for family in (
        AdtApplication,
        MergeApplication,
        LinkApplication,
        IdentityApplication,
        SiuApplication,
        OruApplication,
        DftApplication,
    )
    for trigger in family.triggers
}


class RecordIngestor:
    """Applies messages to the record (``apply``, ``apply_many``)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        identity_rule: IdentityRule | None = DEFAULT_RULE,
        trust_cross_references: frozenset[str] | None = None,
        local_timezone: tzinfo = UTC,
        clock: Callable[[], datetime] = utc_now,
    ):
        """``trust_cross_references``: the senders (MSH-3) whose PIDs link patients; None trusts all."""
        self._engine = engine
        self._rule = identity_rule
        self._trust = trust_cross_references
        self._local = local_timezone
        self._clock = clock
        self._statements = Statements(engine.dialect, cipher_of(engine))

    @property
    def engine(self) -> sa.Engine:
        """The database the record lives in."""
        return self._engine

    def apply(self, message_id: int, message: Message, received_at: datetime) -> IngestResult:
        """Apply the message stored as ``message_id`` in a transaction; the same id again changes nothing.

        Raises RecordError when the content cannot be applied, StoreError when the database fails.
        """
        (result,) = self.apply_many([(message_id, message, received_at)])
        if isinstance(result, Exception):
            raise result
        return result

    def apply_many(
        self, messages: Sequence[tuple[int, Message, datetime]]
    ) -> list[IngestResult | EngineError]:
        """Apply stored ``(message id, message, received at)`` in order, in one transaction; one result each.

        A message that cannot be applied gets its error in its place (RecordError for its content,
        StoreError when the database refuses its rows) and leaves no trace: the transaction is
        rolled back and the others are applied again without it, so each ends as if applied alone.
        Raises StoreError when the database itself fails (locked, unreachable): nothing is applied.
        """
        for _, _, received_at in messages:
            require_aware(received_at, "received_at")
        results: list[IngestResult | EngineError] = []
        left = list(messages)
        each = False
        while left:
            try:
                results.extend(self._apply_together(left, each=each))
                break
            except _Refused as refused:
                results.extend(self.apply_many(left[: refused.index]))
                results.append(refused.error)
                left = left[refused.index + 1 :]
            except RowsRefused:
                # Again, each message's rows written and marked as it is applied: the one whose rows
                # are refused is found.
                each = True
        return results

    def _apply_together(
        self, messages: list[tuple[int, Message, datetime]], *, each: bool
    ) -> list[IngestResult]:
        """Apply every message in one transaction, or raise _Refused for the first that fails (rolling back).

        The rows whose ids are not asked for (record_applied_messages' among them) go in together
        (engine/record/pending.py), or each message's after it (``each``); RowsRefused when the
        database refuses rows that went in together.
        """
        with store_errors(f"applying {len(messages)} message(s) to the record"):
            # TRANSACTION: for each message, every fact, history row, link, merge and conflict it makes
            # and the record_applied_messages row that makes a second apply a no-op.
            with self._engine.begin() as connection:
                tables = self._statements.tables
                pending = Pending(tables, TableCursor(connection, tables), together=not each)
                lookup = Writer(
                    connection,
                    self._statements,
                    message_id=None,
                    cause="",
                    now=self._clock(),
                    message_time=_EPOCH,
                    pending=pending,
                )
                keys = (
                    {"message_id": message_id}
                    for message_id in dict.fromkeys(message_id for message_id, _, _ in messages)
                )
                done = {
                    row["message_id"]: IngestResult(
                        row["message_id"],
                        row["event"],
                        row["patient_id"],
                        row["applied"],
                        row["detail"],
                        already_applied=True,
                    )
                    for row in lookup.rows(schema.applied_messages, *keys, order=())
                }
                missing = _not_stored(connection, {message_id for message_id, _, _ in messages} - set(done))
                results = []
                for index, (message_id, message, received_at) in enumerate(messages):
                    result = done.get(message_id)
                    if result is None:
                        if message_id in missing:
                            raise _Refused(index, _unknown(message_id))
                        try:
                            with store_errors(f"applying message {message_id} to the record"):
                                result, done[message_id], mark = self._apply_one(
                                    connection, pending, message_id, message, received_at
                                )
                                lookup.add(schema.applied_messages, mark)
                                if each:
                                    pending.write()
                        except RowsRefused:
                            raise
                        except StoreError as error:
                            if error.transient:
                                # The database, not this message: nothing of the batch can be applied now.
                                raise
                            raise _Refused(index, error) from error
                        except Exception as error:
                            # RecordError, or a bug that this message's content triggers.
                            raise _Refused(index, error) from error
                    results.append(result)
                pending.write()
        return results

    def _apply_one(
        self,
        connection: sa.Connection,
        pending: Pending,
        message_id: int,
        message: Message,
        received_at: datetime,
    ) -> tuple[IngestResult, IngestResult, dict[str, Any]]:
        """Apply one message inside the caller's transaction.

        Returns its result, the result of applying it again, and its record_applied_messages row.
        """
        facts = read_message(message, received_at=received_at, local=self._local)
        writer = Writer(
            connection,
            self._statements,
            message_id=message_id,
            cause=facts.event,
            now=self._clock(),
            message_time=facts.message_time,
            pending=pending,
        )
        family = _FAMILIES.get((facts.code, facts.trigger))
        if family is None:
            patient_id, applied, detail = None, False, f"{facts.event} is not recorded"
        else:
            patient_id, applied, detail = family(writer, facts, self._rule, self._local, self._trust).run()
        event = facts.event[:20]
        mark = {
            "message_id": message_id,
            "applied_at": writer.now,
            "event": event,
            "message_time": facts.message_time,
            "patient_id": patient_id,
            "applied": applied,
            "detail": detail,
        }
        return (
            IngestResult(message_id, facts.event, patient_id, applied, detail),
            IngestResult(message_id, event, patient_id, applied, detail, already_applied=True),
            mark,
        )


def _not_stored(connection: sa.Connection, message_ids: set[int]) -> set[int]:
    """The ids of ``message_ids`` that no stored message has (SQLite; elsewhere the foreign key refuses them).

    On SQLite the record's tables are in a file of their own, and no foreign key crosses files:
    a mark under an id that no message has would make the message later given that id
    "already applied", and the record's rows would name it.
    """
    if not message_ids or connection.dialect.name != "sqlite":
        return set()
    found = connection.execute(sa.select(messages.c.id).where(messages.c.id.in_(sorted(message_ids))))
    return message_ids - set(found.scalars())


def _unknown(message_id: int) -> StoreError:
    """What a message id unknown to the store fails with: as the foreign key's refusal did (not transient)."""
    error = StoreError(f"applying message {message_id} to the record failed: no such message is stored")
    error.__cause__ = LookupError(message_id)
    return error


class _Refused(Exception):
    """Raised out of a transaction (rolling it back) for the message at ``index``, failed with ``error``."""

    def __init__(self, index: int, error: Exception):
        super().__init__(index, error)
        self.index = index
        self.error = error
