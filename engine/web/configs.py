"""The configuration over HTTP, read-only and for admins: as loaded, and the history of applied configs.

    GET /api/config                       {"summary": the channels as loaded, "applied": the latest record}
    GET /api/config/history?limit=&before_id=   the applied configs, newest first, without their text
    GET /api/config/history/{id}          one applied config with its text
    GET /api/config/diff?from=A&to=B      {"from", "to", "diff": unified diff of A's text to B's}

The texts come from the store's ``config_history`` (engine.store.configs), where the engine keeps
each config it applied with every password hash already redacted; the summary is the running
config's names and shapes (``summary`` is given by the service), never a secret. Reads run on the
store's read pool.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping

from twisted.internet import defer

from engine.store.configs import ConfigRecord
from engine.web.apidoc import ID, json_response, operation, query
from engine.web.responses import JsonResource, Reply, error_reply, json_reply, parse_id, serve
from engine.web.roles import ADMIN

__all__ = ["OPENAPI_PATHS", "ConfigApi", "record_json"]

DEFAULT_HISTORY = 20
MAX_HISTORY = 500

OPENAPI_PATHS: dict = {
    "/api/config": {
        "get": operation(
            "The configuration as loaded: a summary of the running one, and the latest applied text",
            ADMIN,
            ok=json_response("{summary, applied}", {"type": "object"}),
        )
    },
    "/api/config/history": {
        "get": operation(
            "The applied configurations, newest first, without their text",
            ADMIN,
            parameters=[
                query("limit", f"1..{MAX_HISTORY}, default {DEFAULT_HISTORY}", kind="integer"),
                query("before_id", "page: only records with a smaller id", kind="integer"),
            ],
        )
    },
    "/api/config/history/{id}": {
        "get": operation(
            "One applied configuration with its text (password hashes redacted)",
            ADMIN,
            parameters=[ID],
            responses={"404": {"description": "no such record"}},
        )
    },
    "/api/config/diff": {
        "get": operation(
            "A unified diff between two applied configurations",
            ADMIN,
            parameters=[
                {**query("from", "the older record's id", kind="integer"), "required": True},
                {**query("to", "the newer record's id", kind="integer"), "required": True},
            ],
            ok=json_response("{from, to, diff}", {"type": "object"}),
            responses={"404": {"description": "no such record"}},
        )
    },
}


def record_json(record: ConfigRecord, *, with_content: bool) -> dict:
    """One applied configuration as JSON: when, from where, its digest and what changed (and its text)."""
    shown = {
        "id": record.id,
        "applied_at": record.applied_at.isoformat(),
        "source": record.source,
        "sha256": record.sha256,
        "changes": record.changes,
        "inputs": record.inputs,
    }
    return {**shown, "content": record.content} if with_content else shown


def _ids(request, names: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, int]:
    """Query parameters that are row ids, each at most once; ValueError says which one is not."""
    found = {}
    for raw_name, values in (request.args or {}).items():
        name = raw_name.decode("utf-8", "replace")
        if name not in names:
            raise ValueError(f"unknown parameter {name!r}; known: {', '.join(names)}")
        value = parse_id(values[0].strip()) if len(values) == 1 else None
        if value is None:
            raise ValueError(f"{name} must be given once, a whole number 1..2^63-1")
        found[name] = value
    missing = [name for name in required if name not in found]
    if missing:
        raise ValueError(f"give {' and '.join(missing)}")
    return found


def _not_found(record_id: int) -> Reply:
    return error_reply(404, f"no applied configuration {record_id}")


class ConfigApi(JsonResource):
    """``/api/config`` and below it ``history``, ``history/{id}`` and ``diff``."""

    isLeaf = True

    def __init__(self, store, summary: Callable[[], Mapping] | None = None):
        super().__init__()
        self._store = store
        self._summary = summary

    def render_GET(self, request) -> int:
        path = [segment for segment in request.postpath if segment]
        try:
            if not path:
                _ids(request, ())  # none taken: an unknown one is refused, not ignored
                work = self._current()
            elif path == [b"history"]:
                work = self._history(_ids(request, ("limit", "before_id")))
            elif len(path) == 2 and path[0] == b"history" and parse_id(path[1]) is not None:
                _ids(request, ())
                work = self._one(parse_id(path[1]))
            elif path == [b"diff"]:
                work = self._diff(**_ids(request, ("from", "to"), required=("from", "to")))
            else:
                work = defer.succeed(error_reply(404, "no such resource"))
        except ValueError as error:
            work = defer.succeed(error_reply(400, str(error)))
        return serve(request, work)

    def _current(self) -> defer.Deferred:
        summary = dict(self._summary()) if self._summary is not None else None
        d = self._store.config_history(1)
        return d.addCallback(
            lambda latest: json_reply(
                {
                    "summary": summary,
                    "applied": record_json(latest[0], with_content=True) if latest else None,
                }
            )
        )

    def _history(self, params: Mapping[str, int]) -> defer.Deferred:
        limit = params.get("limit", DEFAULT_HISTORY)
        if limit > MAX_HISTORY:
            raise ValueError(f"limit must be a whole number 1..{MAX_HISTORY}")
        d = self._store.config_history(limit, before_id=params.get("before_id"))
        return d.addCallback(
            lambda records: json_reply([record_json(record, with_content=False) for record in records])
        )

    def _one(self, record_id: int) -> defer.Deferred:
        d = self._store.config_record(record_id)
        return d.addCallback(
            lambda record: (
                json_reply(record_json(record, with_content=True)) if record else _not_found(record_id)
            )
        )

    def _diff(self, **ids: int) -> defer.Deferred:
        older_id, newer_id = ids["from"], ids["to"]
        d = defer.gatherResults(
            [self._store.config_record(older_id), self._store.config_record(newer_id)], consumeErrors=True
        )
        d.addErrback(lambda failure: failure.value.subFailure)  # the store's own error, not a wrapper

        def compared(records: list[ConfigRecord | None]) -> Reply:
            older, newer = records
            if older is None or newer is None:
                return _not_found(older_id if older is None else newer_id)
            lines = difflib.unified_diff(
                older.content.splitlines(keepends=True),
                newer.content.splitlines(keepends=True),
                fromfile=f"{older.id} {older.applied_at.isoformat()} {older.source}",
                tofile=f"{newer.id} {newer.applied_at.isoformat()} {newer.source}",
            )
            diff = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
            return json_reply({"from": older_id, "to": newer_id, "diff": diff})

        return d.addCallback(compared)
