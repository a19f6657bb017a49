"""The audit trail from the web side: who saw or changed what, written on the store's writer thread.

GET /api/audit?limit=&before_id=&message_id=&user=&action=&since=   the trail, newest first (admin)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.internet import defer

from engine.model import utc_now
from engine.store.audit import AuditRepository
from engine.web.apidoc import operation
from engine.web.auth import authenticated, remote_address
from engine.web.responses import JsonResource, json_reply
from engine.web.roles import ADMIN
from engine.web.search import MAX_LIMIT, answer, moment, queries, request_params, whole_number

__all__ = ["OPENAPI_PATHS", "AuditApi", "Auditor"]


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


_AUDIT_PARAMS = ("limit", "before_id", "message_id", "user", "action", "since")


class AuditApi(JsonResource):
    """``/api/audit``: the audit trail, newest first."""

    isLeaf = True

    def __init__(self, auditor: Auditor):
        super().__init__()
        self._auditor = auditor

    def render_GET(self, request) -> int:
        def recent() -> defer.Deferred:
            params = request_params(request, _AUDIT_PARAMS)
            criteria = {
                "before_id": whole_number(params, "before_id"),
                "message_id": whole_number(params, "message_id"),
                "user": params.get("user"),
                "action": params.get("action"),
                "since": moment(params, "since"),
            }
            d = self._auditor.recent(whole_number(params, "limit", default=100, high=MAX_LIMIT), **criteria)
            return d.addCallback(lambda entries: json_reply([entry.to_json_dict() for entry in entries]))

        return answer(request, recent)


_AUDIT_DOC = {
    "limit": "1..500, default 100",
    "before_id": "page: only entries with a smaller id",
    "message_id": "one message's entries",
    "user": "one user's entries",
    "action": "one action's entries (view, raw, resend, login ...)",
    "since": "ISO 8601 time: entries at or after",
}

OPENAPI_PATHS: dict = {
    "/api/audit": {"get": operation("The audit trail, newest first", ADMIN, parameters=queries(_AUDIT_DOC))},
}
