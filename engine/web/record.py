"""An operator's identity work over HTTP: the worklist, and merge, link, unlink, unmerge, resolve.

    GET  /api/record/worklist                                   open conflicts and possible duplicates
    POST /api/record/merge    {"survivor": 1, "prior": 2, "reason": "..."}  -> {"merge_id": 3}
    POST /api/record/link     {"survivor": 1, "prior": 2, "reason": "..."}  -> {"merge_id": 3}
    POST /api/record/unlink   {"merge_id": 3, "reason": "..."}              -> {"moved": 5}
    POST /api/record/unmerge  {"merge_id": 3, "reason": "..."}              -> {"moved": 5}
    POST /api/record/resolve  {"conflict_id": 4, "reason": "..."}           -> {"conflict_id": 4}

Every action runs on the store's writer thread with its audit row in the same transaction
(engine.record.operations); a refusal (unknown id, already undone, a link of patients whose
birth date, sex or SSN differ) is a 409 naming why, an unknown id a 404. Mount behind the gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource

from engine.errors import RecordError, StoreError
from engine.record.operations import Operator, RecordOperator
from engine.web.auth import authenticated, remote_address
from engine.web.responses import JsonResource, Reply, error_reply, json_reply, serve

__all__ = ["OPENAPI_PATHS", "record_resources"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _post(summary: str, fields: dict[str, str], answer: str) -> dict:
    """The OpenAPI operation of one POST action: a JSON body of ``fields`` and a reason."""
    return {
        "post": {
            "summary": summary,
            "x-role": "operator",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": [*fields, "reason"],
                            "additionalProperties": False,
                            "properties": {
                                **{
                                    name: {"type": "integer", "description": text}
                                    for name, text in fields.items()
                                },
                                "reason": {"type": "string", "description": "kept in the audit trail"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "done",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {answer: {"type": "integer"}}}
                        }
                    },
                },
                "400": {"description": "the body is not the object asked for"},
                "401": {"description": "not logged in"},
                "404": {"description": "no such patient, merge or conflict"},
                "409": {"description": "refused: already done or undone, or patients that contradict"},
            },
        }
    }


_PAIR = {"survivor": "the patient who stays", "prior": "the patient merged into it"}
OPENAPI_PATHS: dict = {
    "/api/record/worklist": {
        "get": {
            "summary": "Open identity conflicts and possible duplicates, oldest first",
            "x-role": "operator",
            "responses": {
                "200": {
                    "description": "the worklist",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "id": {"type": "integer"},
                                                "kind": {"type": "string"},
                                                "patient_id": {"type": ["integer", "null"]},
                                                "other_patient_id": {"type": ["integer", "null"]},
                                                "authority": {"type": ["string", "null"]},
                                                "value": {"type": ["string", "null"]},
                                                "detail": {"type": "string"},
                                                "created_at": {"type": "string", "format": "date-time"},
                                                "message_id": {"type": ["integer", "null"]},
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                },
                "401": {"description": "not logged in"},
            },
        }
    },
    "/api/record/merge": _post("Merge patient prior into survivor", _PAIR, "merge_id"),
    "/api/record/link": _post("Link patient prior to survivor (reversible by unlink)", _PAIR, "merge_id"),
    "/api/record/unlink": _post("Undo a link", {"merge_id": "the link's merge"}, "moved"),
    "/api/record/unmerge": _post("Undo a merge or link", {"merge_id": "the merge"}, "moved"),
    "/api/record/resolve": _post("Dismiss an open conflict", {"conflict_id": "the conflict"}, "conflict_id"),
}


class BadBody(ValueError):
    """The request body is not the JSON object the action asks for."""


def record_resources(store, *, auditor=None) -> dict[str, resource.Resource]:
    """The resource to mount behind the gate, by path: ``api/record``."""
    return {"api/record": RecordApi(store, auditor)}


# action -> (the body's id fields, in the order the operator's method takes them, the answer's name)
_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "merge": (("survivor", "prior"), "merge_id"),
    "link": (("survivor", "prior"), "merge_id"),
    "unlink": (("merge_id",), "moved"),
    "unmerge": (("merge_id",), "moved"),
    "resolve": (("conflict_id",), "conflict_id"),
}


def _body(request, fields: tuple[str, ...]) -> tuple[list[int], str]:
    """The ids named ``fields`` and the reason, from a JSON object body with nothing else."""
    try:
        body = json.loads(request.content.read() or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise BadBody(f"the body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise BadBody(f"send a JSON object with {', '.join(fields)} and reason")
    unknown = sorted(set(body) - {*fields, "reason"})
    if unknown:
        raise BadBody(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}, reason")
    ids = []
    for name in fields:
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**63:
            raise BadBody(f"{name} must be a positive whole number")
        ids.append(value)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BadBody("give a reason (text): it is kept in the audit trail")
    return ids, reason.strip()


def _refused(failure: Failure) -> Reply | Failure:
    """A refusal of the record (RecordError, maybe wrapped by the store's writer) as 404 or 409."""
    error = failure.value
    cause = error.__cause__ if isinstance(error, StoreError) else error
    if not isinstance(cause, RecordError):
        return failure
    text = str(cause)
    return error_reply(404 if text.startswith("there is no") else 409, text)


class RecordApi(JsonResource):
    """``/api/record/{worklist,merge,link,unlink,unmerge,resolve}``."""

    isLeaf = True

    def __init__(self, store, auditor):
        super().__init__()
        self._store = store
        self._auditor = auditor
        self._operator: RecordOperator | None = None

    def _operations(self) -> RecordOperator:
        if self._operator is None:
            self._operator = RecordOperator(self._store.repository.engine)
        return self._operator

    def _name(self, request) -> str | None:
        path = [segment for segment in request.postpath if segment]
        return path[0].decode("utf-8", "replace") if len(path) == 1 else None

    def render_GET(self, request) -> int:
        if self._name(request) != "worklist":
            return serve(request, defer.succeed(error_reply(404, "GET /api/record/worklist")))
        d = self._store.read(self._operations().worklist)

        def listed(items: list[dict]) -> defer.Deferred:
            reply = json_reply({"items": items})
            if self._auditor is None:
                return defer.succeed(reply)
            detail = f"conflicts={','.join(str(item['id']) for item in items)}"
            return self._auditor.record(request, "patient.worklist", detail=detail).addCallback(
                lambda _: reply
            )

        return serve(request, d.addCallback(listed))

    def render_POST(self, request) -> int:
        name = self._name(request)
        if name not in _ACTIONS:
            return serve(
                request, defer.succeed(error_reply(404, f"POST /api/record/{{{','.join(_ACTIONS)}}}"))
            )
        fields, answer = _ACTIONS[name]
        try:
            ids, reason = _body(request, fields)
        except BadBody as error:
            return serve(request, defer.succeed(error_reply(400, str(error))))
        by = Operator(authenticated(request).user, remote_address(request))
        action: Callable[..., int] = getattr(self._operations(), name)
        d = self._store.write_record(lambda: action(*ids, reason=reason, by=by))
        d.addCallbacks(lambda result: json_reply({answer: result}), _refused)
        return serve(request, d)
