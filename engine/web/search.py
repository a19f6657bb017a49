"""The query parameters of the API's searches: read, checked, and refused with the reason the client is told.

A parameter must be known and given once; a bad one is a ``BadRequest`` (400), one the user's role may
not use a ``Forbidden`` (403). ``answer`` serves a piece of work that may raise either. The filters of
a message search (``FILTERS``) are shared by the search, its count and the bulk actions
(engine.web.messages), and the audit trail's search (engine.web.audit) reads its own with the same
helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from twisted.internet import defer

from engine.hl7.terms import query_terms
from engine.model import Status
from engine.store.reads import ContentSearchOff, MessageQuery
from engine.web.apidoc import query
from engine.web.auth import authenticated
from engine.web.responses import MAX_ID, Reply, error_reply, serve
from engine.web.roles import OPERATOR, may

__all__ = [
    "FILTERS",
    "FILTER_DOC",
    "MAX_LIMIT",
    "BadRequest",
    "Forbidden",
    "allowed",
    "answer",
    "filter_query",
    "message_query",
    "moment",
    "queries",
    "request_params",
    "whole_number",
]

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class BadRequest(ValueError):
    """A query parameter the API cannot use; the message is what the client is told (400)."""


class Forbidden(BadRequest):
    """A parameter the user's role may not use (403)."""


def request_params(request, known: tuple[str, ...]) -> dict[str, str]:
    """The query (and form) parameters, each given at most once and all of them known."""
    params: dict[str, str] = {}
    for raw_name, values in (request.args or {}).items():
        name = raw_name.decode("utf-8", "replace")
        if name not in known:
            raise BadRequest(f"unknown parameter {name!r}; known: {', '.join(known)}")
        if len(values) != 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times")
        value = values[0].decode("utf-8", "replace").strip()
        if value:
            params[name] = value
    return params


def whole_number(
    params: Mapping[str, str], name: str, *, default: int | None = None, low: int = 1, high: int = MAX_ID
) -> int | None:
    """The parameter ``name`` as a whole number ``low..high`` (``default`` when not given)."""
    value = params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number {low}..{high} (got {value!r})")
    return int(value)


def moment(params: Mapping[str, str], name: str) -> datetime | None:
    """The parameter ``name`` as an aware time (ISO 8601; without an offset it is UTC)."""
    value = params.get(name)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 time such as 2025-01-31T08:00:00Z (got {value!r})"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def answer(request, work: Callable[[], defer.Deferred]) -> int:
    """Serve ``work()``; a BadRequest raised while parsing or working becomes 400 (Forbidden 403)."""
    try:
        d = work()
    except BadRequest as error:
        d = defer.succeed(_refusal(error))
    d.addErrback(
        lambda failure: _refusal(failure.value) if failure.check(BadRequest, ContentSearchOff) else failure
    )
    return serve(request, d)


def _refusal(error: Exception) -> Reply:
    return error_reply(403 if isinstance(error, Forbidden) else 400, str(error))


FILTERS = (
    "q",
    "control_id",
    "patient_id",
    "type",
    "sender",
    "status",
    "channel",
    "listener",
    "since",
    "until",
)
_SEARCH_PARAMS = (*FILTERS, "limit", "before_id")


def message_query(request) -> MessageQuery:
    """The MessageQuery of a search request; BadRequest explains a parameter it cannot use.

    ``sender`` is MSH-3's namespace id, or ``APP/FACILITY``; times without an offset are UTC;
    ``q`` is words of the content, each matching a word's start.
    """
    params = request_params(request, _SEARCH_PARAMS)
    return filter_query(
        params,
        limit=whole_number(params, "limit", default=DEFAULT_LIMIT, high=MAX_LIMIT),
        before_id=whole_number(params, "before_id"),
    )


def filter_query(params: Mapping[str, str], *, limit: int, before_id: int | None = None) -> MessageQuery:
    """The MessageQuery of the filters in ``params`` (FILTERS) and this page."""
    if "q" in params and not query_terms(params["q"]):
        raise BadRequest(f"q must hold a letter or digit (got {params['q']!r})")
    application, _, facility = params.get("sender", "").partition("/")
    return MessageQuery(
        text=params.get("q"),
        control_id=params.get("control_id"),
        patient_id=params.get("patient_id"),
        message_type=params.get("type"),
        sending_application=application or None,
        sending_facility=facility or None,
        status=_status(params),
        channel=params.get("channel"),
        listener=params.get("listener"),
        since=moment(params, "since"),
        until=moment(params, "until"),
        limit=limit,
        before_id=before_id,
    )


def allowed(request, query: MessageQuery) -> MessageQuery:
    """``query`` if the request's role may search by all its filters; Forbidden (403) if not.

    Searching by patient id or by content is an operator's: the answer would tell a viewer about a
    person, or what messages say.
    """
    if not may(authenticated(request).role, OPERATOR):
        if query.patient_id is not None:
            raise Forbidden("searching by patient_id needs the operator role")
        if query.text is not None:
            raise Forbidden("searching by content (q) needs the operator role")
    return query


def _status(params: Mapping[str, str]) -> str | None:
    if "status" not in params:
        return None
    status = params["status"].upper()
    if status not in Status.__members__:
        raise BadRequest(f"status must be one of {', '.join(Status)} (got {params['status']!r})")
    return status


FILTER_DOC = {
    "q": "words of the content (names, identifiers, OBX values), each matching a word's start"
    " (not for a viewer: 403; 400 on an encrypted store)",
    "control_id": "MSH-10, exactly",
    "patient_id": "the patient identifier stored with the message, exactly (not for a viewer: 403)",
    "type": "ADT, ADT^A01, ADT^A01^ADT_A01 or ^A01",
    "sender": "MSH-3 namespace id, or APP/FACILITY",
    "status": "RECEIVED, REJECTED, FILTERED, TRANSFORMED, QUEUED, SENT or ERROR",
    "channel": "the channel's name",
    "listener": "the listener's name",
    "since": "ISO 8601 time: received at or after",
    "until": "ISO 8601 time: received before",
}
_INTEGERS = {"limit", "before_id", "message_id"}


def queries(described: Mapping[str, str]) -> list[dict]:
    """The OpenAPI query parameters of ``described`` (name: description); ids and limits are integers."""
    return [
        query(name, text, kind="integer" if name in _INTEGERS else "string")
        for name, text in described.items()
    ]
