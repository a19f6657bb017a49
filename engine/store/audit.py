"""The audit trail: who saw or changed which message, when, and from where.

One row per view of a message (its content, or its raw bytes), per resend or reprocess an
operator asked for, and per login. ``message_id`` is a plain column, not a foreign key: the
trail must outlive the messages it speaks of, ids included. ``detail`` says what was asked
(``destination=emr``), never what the message holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from engine.model import require_aware, utc_now
from engine.store.driver import fit_row, store_errors
from engine.store.schema import audit_log

__all__ = ["AuditEntry", "AuditRepository"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action."""

    id: int
    at: datetime
    user: str
    action: str
    message_id: int | None
    remote: str
    detail: str

    def to_json_dict(self) -> dict:
        """The entry as JSON-ready values (``at`` in ISO 8601)."""
        return {**dataclasses.asdict(self), "at": self.at.isoformat()}


_COLUMNS = tuple(audit_log.c[f.name] for f in dataclasses.fields(AuditEntry))


class AuditRepository:
    """Blocking writes and reads of the audit trail, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def record(
        self,
        *,
        user: str,
        action: str,
        remote: str,
        message_id: int | None = None,
        detail: str = "",
        at: datetime | None = None,
    ) -> int:
        """Write one entry (at ``at``, default now); returns its id."""
        at = at or self._clock()
        require_aware(at, "at")
        values = fit_row(
            audit_log,
            {
                "at": at,
                "user": user,
                "action": action,
                "message_id": message_id,
                "remote": remote,
                "detail": detail,
            },
        )
        with store_errors("writing the audit trail"), self._engine.begin() as connection:
            return connection.execute(
                sa.insert(audit_log).values(values).returning(audit_log.c.id)
            ).scalar_one()

    def recent(
        self,
        limit: int = 100,
        *,
        before_id: int | None = None,
        message_id: int | None = None,
        user: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """The newest entries first, at most ``limit``, below ``before_id``.

        Only one message's, one user's, one action's, or those at or after ``since``, when given.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        c = audit_log.c
        criteria = []
        if before_id is not None:
            criteria.append(c.id < before_id)
        if message_id is not None:
            criteria.append(c.message_id == message_id)
        if user is not None:
            criteria.append(c.user == user)
        if action is not None:
            criteria.append(c.action == action)
        if since is not None:
            require_aware(since, "since")
            criteria.append(c.at >= since)
        statement = sa.select(*_COLUMNS).where(*criteria).order_by(c.id.desc()).limit(limit)
        with store_errors("reading the audit trail"), self._engine.connect() as connection:
            return [AuditEntry(**row._mapping) for row in connection.execute(statement)]
