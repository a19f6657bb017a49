"""The audit trail from the web side: who saw or changed what, written on the store's writer thread."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.internet import defer

from engine.model import utc_now
from engine.store.audit import AuditRepository
from engine.web.auth import authenticated, remote_address

__all__ = ["Auditor"]


class Auditor:
    """Writes who saw or changed what to the audit trail, on the store's writer thread."""

    def __init__(self, store, *, clock: Callable[[], datetime] = utc_now):
        self._store = store
        self._clock = clock
        self._repository: AuditRepository | None = None

    @property
    def repository(self) -> AuditRepository:
        """The blocking AuditRepository on the store's database (the store must be started)."""
        if self._repository is None:
            self._repository = AuditRepository(self._store.repository.engine, clock=self._clock)
        return self._repository

    def record(
        self,
        request,
        action: str,
        *,
        user: str | None = None,
        message_id: int | None = None,
        detail: str = "",
    ) -> defer.Deferred:
        """Write one entry for this request (its admitted user unless ``user`` is given).

        Fires with the entry id after COMMIT.
        """
        who = user if user is not None else authenticated(request).user
        return self._store.write(
            self.repository.record,
            at=self._clock(),
            user=who,
            action=action,
            remote=remote_address(request),
            message_id=message_id,
            detail=detail,
        )

    def recent(self, limit: int = 100, **criteria) -> defer.Deferred:
        """Fires with AuditRepository.recent(limit, **criteria): newest first."""
        return self._store.read(self.repository.recent, limit, **criteria)
