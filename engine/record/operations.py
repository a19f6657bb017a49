"""An operator's identity work on the record: the worklist, and merge, link, unlink, unmerge, resolve.

Each action runs in one transaction with its audit trail row (``audit_log``: who, from where,
what, with the reason) and its record_history rows; each is reversible: a merge or link by
``unmerge``/``unlink``, a resolved conflict stays listed in the record with its resolution.
``RecordOperator``'s methods block: run them on the store's writer thread (reads on a reader).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from engine.errors import RecordError
from engine.model import utc_now
from engine.record import schema
from engine.record.identity import survivor_of
from engine.record.merging import contradiction, merge_patients, unmerge
from engine.record.writer import Statements, Writer
from engine.store.cipher import cipher_of
from engine.store.driver import fit_row, store_errors
from engine.store.reads import WORKLIST_SHOWN
from engine.store.schema import audit_log

__all__ = ["WORKLIST_KINDS", "Operator", "RecordOperator"]

#: The open conflicts an operator is asked to review, by kind.
WORKLIST_KINDS = (
    "possible_duplicate",
    "rule_ambiguous",
    "identifiers_disagree",
    "alias_contradicts",
    "link_contradicted",
    "merge_ambiguous",
    "identifier_taken",
)

_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


class Operator:
    """Who acts (a user name) and from where (an address, or ``cli``): what the audit trail keeps."""

    def __init__(self, user: str, remote: str):
        self.user = user
        self.remote = remote


class RecordOperator:
    """An operator's actions on the record, each in a transaction with its audit row (blocking)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock
        self._statements = Statements(engine.dialect, cipher_of(engine))

    def worklist(self, limit: int = WORKLIST_SHOWN) -> list[dict[str, Any]]:
        """The open conflicts and possible duplicates, oldest first, as JSON-ready dicts (ids, no names)."""
        c = schema.conflicts
        statement = (
            sa.select(
                c.c.id,
                c.c.kind,
                c.c.patient_id,
                c.c.other_patient_id,
                c.c.authority,
                c.c.value,
                c.c.detail,
                c.c.created_at,
                c.c.message_id,
            )
            .where(c.c.resolved_at.is_(None))
            .order_by(c.c.id)
            .limit(limit)
        )
        with store_errors("reading the record's worklist"), self._engine.connect() as connection:
            return [
                {**row._mapping, "created_at": row.created_at.isoformat()}
                for row in connection.execute(statement)
            ]

    def merge(self, survivor: int, prior: int, *, reason: str, by: Operator) -> int:
        """Merge patient ``prior`` into ``survivor`` (kind ``operator``); the merge's id."""
        return self._act("patient.merge", by, reason, self._merge, survivor, prior, "operator", reason)

    def link(self, survivor: int, prior: int, *, reason: str, by: Operator) -> int:
        """Link ``prior`` to ``survivor``: a merge of kind ``link`` that ``unlink`` undoes; its id."""
        return self._act("patient.link", by, reason, self._merge, survivor, prior, "link", reason)

    def unlink(self, merge_id: int, *, reason: str, by: Operator) -> int:
        """Undo a link (A24, cross-reference, identity rule, operator's link); the rows moved back."""
        return self._act(
            "patient.unlink",
            by,
            reason,
            lambda w: unmerge(w, merge_id, reason, links_only=True),
            detail=merge_id,
        )

    def unmerge(self, merge_id: int, *, reason: str, by: Operator) -> int:
        """Undo any merge or link; the rows moved back."""
        return self._act(
            "patient.unmerge", by, reason, lambda w: unmerge(w, merge_id, reason), detail=merge_id
        )

    def resolve(self, conflict_id: int, *, reason: str, by: Operator) -> int:
        """Dismiss an open conflict (it stays in the record with its resolution); its id."""
        return self._act(
            "patient.resolve", by, reason, self._resolve, conflict_id, reason, detail=conflict_id
        )

    @staticmethod
    def _merge(writer: Writer, survivor: int, prior: int, kind: str, reason: str) -> int:
        if survivor == prior:
            raise RecordError("a patient cannot be merged into itself")
        rows = {}
        for patient_id in (survivor, prior):
            row = writer.select_one(schema.patients, {"id": patient_id})
            if row is None:
                raise RecordError(f"there is no patient {patient_id}")
            if row["merged_into_id"] is not None:
                active = survivor_of(writer, patient_id)["id"]
                raise RecordError(f"patient {patient_id} was merged into {active}: use {active}")
            rows[patient_id] = row
        if kind == "link" and (differs := contradiction(rows[survivor], rows[prior])):
            raise RecordError(f"patients {survivor} and {prior} differ in {differs}: merge them, not link")
        return merge_patients(
            writer, survivor, prior, event=kind[:10], kind=kind, reason=reason, source_system=None
        )

    @staticmethod
    def _resolve(writer: Writer, conflict_id: int, reason: str) -> int:
        conflict = writer.select_one(schema.conflicts, {"id": conflict_id})
        if conflict is None:
            raise RecordError(f"there is no conflict {conflict_id}")
        if conflict["resolved_at"] is not None:
            raise RecordError(f"conflict {conflict_id} was resolved already: {conflict['resolution']}")
        c = schema.conflicts
        writer.connection.execute(
            c.update().where(c.c.id == conflict_id).values(resolved_at=writer.now, resolution=reason)
        )
        writer.history(c.name, conflict_id, "resolved_at", None, writer.now)
        return conflict_id

    def _act(self, action: str, by: Operator, reason: str, work: Callable, *args, detail: Any = None) -> int:
        """Run ``work(writer, *args)`` and write its audit row, in one transaction; its result."""
        if not reason.strip():
            raise RecordError("give a reason: it is kept in the audit trail and the record")
        cause = f"{action} by {by.user}"
        with store_errors(f"{action} in the record"):
            # TRANSACTION: the operator's change of the record, its history, and its audit row.
            with self._engine.begin() as connection:
                # An operator's action confirms no data as of any time: later messages must not look stale.
                writer = Writer(
                    connection,
                    self._statements,
                    message_id=None,
                    cause=cause,
                    now=self._clock(),
                    message_time=_EPOCH,
                )
                result = work(writer, *args)
                subject = detail if detail is not None else args[:2]
                connection.execute(
                    sa.insert(audit_log).values(
                        fit_row(
                            audit_log,
                            {
                                "at": writer.now,
                                "user": by.user,
                                "action": action,
                                "message_id": None,
                                "remote": by.remote,
                                "detail": f"{_subject(action, subject)} -> {result}; reason: {reason}",
                            },
                        )
                    )
                )
        return result


def _subject(action: str, subject: Any) -> str:
    if action in ("patient.merge", "patient.link"):
        survivor, prior = subject
        return f"patients {prior} into {survivor}"
    if action == "patient.resolve":
        return f"conflict {subject}"
    return f"merge {subject}"
