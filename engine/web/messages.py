"""The JSON API over stored messages and the queues.

    GET  /api/messages?q=&control_id=&patient_id=&type=&sender=&status=&channel=&since=&until=&limit=
         &before_id=
    GET  /api/messages/count?<the search's filters>    how many match: {"count": N}
    POST /api/messages/resend?<the search's filters>&expected_count=N[&destination=]  (audited: resend.bulk)
    POST /api/messages/reprocess?<the search's filters>&expected_count=N          (audited: reprocess.bulk)
    GET  /api/messages/{id}             the message, its stages, deliveries and events (audited: view)
    GET  /api/messages/{id}/raw         the bytes exactly as received; 410 once pruned (audited: raw)
    POST /api/messages/{id}/resend      queue it again for its destinations           (audited: resend)
    POST /api/messages/{id}/reprocess   run it through its channel again              (audited: reprocess)
    GET  /api/queues

The search's parameters are read in engine.web.search; the audit trail's API is engine.web.audit.
``OPENAPI_PATHS`` gives each route's least role. A viewer's answers are shaped here: summaries
without the patient id (and no search by it, nor by content), a message without its content
(engine.web.roles). A search returns summaries only (no content); ``q`` searches by content
(names, identifiers, OBX values: engine.hl7.terms), which only an operator may (it tells what
messages say). A bulk action acts on every message the search's filters match (not only a page),
once the caller says how many it expects: a different count (messages came or went since it
looked) is a 409 with the count now, and nothing is done. A message whose content retention removed shows
``pruned_at`` (else null), an empty ``raw`` and null content elsewhere. A view of a message's
content is written to the audit trail before the content is sent: when the trail cannot be
written, nothing is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from twisted.internet import defer
from twisted.web import resource

from engine.hl7.charset import decode
from engine.store.reads import StoredMessage
from engine.web.apidoc import ID, json_response, operation, query
from engine.web.audit import Auditor
from engine.web.auth import authenticated
from engine.web.responses import (
    MAX_ID,
    JsonResource,
    Reply,
    ReplyResource,
    error_reply,
    json_reply,
    parse_id,
)
from engine.web.roles import OPERATOR, VIEWER, may, without_content, without_person_data
from engine.web.search import (
    FILTER_DOC,
    FILTERS,
    BadRequest,
    allowed,
    answer,
    filter_query,
    message_query,
    queries,
    request_params,
    whole_number,
)
from engine.web.stages import STAGES, message_stages

__all__ = ["OPENAPI_PATHS", "MessagesApi", "QueuesApi", "message_json"]

MAX_BULK = 10_000  # messages one bulk resend or reprocess may act on
HL7_CONTENT_TYPE = b"x-application/hl7-v2+er7"  # HAPI's HL7-over-HTTP media type


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class _Texts:
    """Stored bytes as text for people: decoded with the charset their MSH-18 names (never raises).

    A byte the charset cannot decode shows as U+FFFD (JSON has no way to carry it as it is).
    """

    def __init__(self, default_charset: str):
        self.default_charset = default_charset

    def __call__(self, content: bytes | None) -> str | None:
        if content is None:
            return None
        text = decode(content, self.default_charset).text
        return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def message_json(stored: StoredMessage, text: Callable[[bytes | None], str | None]) -> dict:
    """Everything the API shows of one message.

    The summary, every header column, the content at each stage, the deliveries and the events.
    """
    return {
        **stored.summary.to_json_dict(),
        "receiving_application": stored.receiving_application,
        "receiving_facility": stored.receiving_facility,
        "message_structure": stored.message_structure,
        "processing_id": stored.processing_id,
        "charset": stored.charset,
        "batch_control_id": stored.batch_control_id,
        "batch_index": stored.batch_index,
        "pruned_at": _time_text(stored.pruned_at),
        "raw": text(stored.raw),
        "ack": text(stored.ack),
        "transformed": text(stored.transformed),
        "stages": message_stages(stored, text),
        "deliveries": [
            {
                "id": d.id,
                "destination": d.destination,
                "status": d.status,
                "attempts": d.attempts,
                "created_at": _time_text(d.created_at),
                "next_attempt_at": _time_text(d.next_attempt_at),
                "sent_at": _time_text(d.sent_at),
                "superseded_at": _time_text(d.superseded_at),
                "response_code": d.response_code,
                "reason": d.reason,
                "payload": text(d.payload),
                "response": text(d.response),
            }
            for d in stored.deliveries
        ],
        "events": [
            {
                "id": e.id,
                "at": _time_text(e.at),
                "status": e.status,
                "detail": e.detail,
                "destination": e.destination,
            }
            for e in stored.events
        ],
    }


class MessagesApi(JsonResource):
    """``/api/messages``: search, and each message below it by id."""

    def __init__(
        self,
        store,
        auditor: Auditor,
        *,
        default_charset: str,
        actions: Mapping[bytes, Callable[[resource.Resource], resource.Resource]] | None = None,
    ):
        """``actions``: more actions below each message (``try``), as a resource built per message."""
        super().__init__()
        self._store = store
        self._auditor = auditor
        self._text = _Texts(default_charset)
        self._actions = {**_ACTIONS, **(actions or {})}

    def getChild(self, path: bytes, request) -> resource.Resource:
        if path == b"":
            return self
        if path in _BULK_ACTIONS:
            return _Bulk(path.decode(), self._store, self._auditor)
        if path == b"count":
            return _Count(self._store)
        message_id = parse_id(path)
        if message_id is None:
            return ReplyResource(
                error_reply(404, f"no message {path.decode('utf-8', 'replace')!r}: ids are 1..{MAX_ID}")
            )
        return _Message(message_id, self._store, self._auditor, self._text, self._actions)

    def render_GET(self, request) -> int:
        shaped = _shaper(request, without_person_data)

        def search() -> defer.Deferred:
            query = allowed(request, message_query(request))
            d = self._store.search(query)
            return d.addCallback(
                lambda found: json_reply([shaped(summary.to_json_dict()) for summary in found])
            )

        return answer(request, search)


class _Message(JsonResource):
    """``/api/messages/{id}`` and its actions."""

    def __init__(self, message_id: int, store, auditor: Auditor, text: _Texts, actions: Mapping):
        super().__init__()
        self.message_id = message_id
        self.store = store
        self._auditor = auditor
        self._text = text
        self._actions = actions

    def getChild(self, path: bytes, request) -> resource.Resource:
        if path == b"":
            return self
        action = self._actions.get(path)
        return action(self) if action is not None else ReplyResource(error_reply(404, "no such resource"))

    def shown(self, request, action: str, reply: Callable[[StoredMessage], Reply]) -> int:
        """Read the message, audit the view, then answer with ``reply(message)``: no audit row, no content."""

        @defer.inlineCallbacks
        def view():
            request_params(request, ())
            stored = yield self.store.get(self.message_id)
            if stored is None:
                return error_reply(404, f"no message {self.message_id}")
            yield self._auditor.record(request, action, message_id=self.message_id)
            return reply(stored)

        return answer(request, view)

    def changed(
        self,
        request,
        action: str,
        known: tuple[str, ...],
        change: Callable[[Mapping[str, str]], defer.Deferred],
    ) -> int:
        """Audit the request, then make the change (``change(params)`` fires with the Reply)."""

        @defer.inlineCallbacks
        def act():
            params = request_params(request, known)
            stored = yield self.store.get(self.message_id)
            if stored is None:
                return error_reply(404, f"no message {self.message_id}")
            detail = " ".join(f"{name}={value}" for name, value in sorted(params.items()))
            yield self._auditor.record(request, action, message_id=self.message_id, detail=detail)
            return (yield change(params))

        return answer(request, act)

    def render_GET(self, request) -> int:
        shaped = _shaper(request, without_content)
        return self.shown(
            request, "view", lambda stored: json_reply(shaped(message_json(stored, self._text)))
        )


def _shaper(request, for_viewer: Callable[[Mapping], dict]) -> Callable[[Mapping], Mapping]:
    """What a message's JSON goes through for this request's role: ``for_viewer`` below operator."""
    return (lambda shown: shown) if may(authenticated(request).role, OPERATOR) else for_viewer


class _Raw(JsonResource):
    """``/api/messages/{id}/raw``: the bytes exactly as received."""

    isLeaf = True

    def __init__(self, message: _Message):
        super().__init__()
        self._message = message

    def render_GET(self, request) -> int:
        headers = (
            (b"content-disposition", b'attachment; filename="message-%d.hl7"' % self._message.message_id),
        )

        def raw(stored: StoredMessage) -> Reply:
            if stored.pruned_at is not None:
                return error_reply(410, f"message {stored.id}: retention removed its content")
            return Reply(200, stored.raw, HL7_CONTENT_TYPE, headers)

        return self._message.shown(request, "raw", raw)


class _Resend(JsonResource):
    """``POST /api/messages/{id}/resend[?destination=]``: queue the message again, unchanged."""

    isLeaf = True

    def __init__(self, message: _Message):
        super().__init__()
        self._message = message

    def render_POST(self, request) -> int:
        message = self._message

        def resend(params: Mapping[str, str]) -> defer.Deferred:
            d = message.store.resend([message.message_id], destination=params.get("destination"))
            return d.addCallback(
                lambda ids: json_reply({"message_id": message.message_id, "deliveries": ids})
            )

        return message.changed(request, "resend", ("destination",), resend)


class _Reprocess(JsonResource):
    """``POST /api/messages/{id}/reprocess``: run the message through its channel again."""

    isLeaf = True

    def __init__(self, message: _Message):
        super().__init__()
        self._message = message

    def render_POST(self, request) -> int:
        message = self._message

        def reprocess(params: Mapping[str, str]) -> defer.Deferred:
            d = message.store.reprocess([message.message_id])
            return d.addCallback(
                lambda count: json_reply({"message_id": message.message_id, "reprocessed": bool(count)})
            )

        return message.changed(request, "reprocess", (), reprocess)


_ACTIONS: dict[bytes, Callable[[_Message], resource.Resource]] = {
    b"raw": _Raw,
    b"resend": _Resend,
    b"reprocess": _Reprocess,
}


class _Count(JsonResource):
    """``GET /api/messages/count``: how many messages the filters match (what a bulk action would act on)."""

    isLeaf = True

    def __init__(self, store):
        super().__init__()
        self._store = store

    def render_GET(self, request) -> int:
        def count() -> defer.Deferred:
            query = allowed(request, filter_query(request_params(request, FILTERS), limit=1))
            return self._store.count(query).addCallback(lambda n: json_reply({"count": n}))

        return answer(request, count)


class _Bulk(JsonResource):
    """``POST /api/messages/resend|reprocess``: the action on every message a search's filters match."""

    isLeaf = True

    def __init__(self, action: str, store, auditor: Auditor):
        super().__init__()
        self._action = action
        self._store = store
        self._auditor = auditor

    def render_POST(self, request) -> int:
        @defer.inlineCallbacks
        def act():
            params = request_params(
                request, (*FILTERS, "expected_count", *_BULK_ACTIONS[self._action.encode()])
            )
            expected = whole_number(params, "expected_count", low=0, high=MAX_BULK)
            if expected is None:
                raise BadRequest("give expected_count: how many messages the search showed")
            ids = yield self._store.ids(filter_query(params, limit=MAX_BULK + 1))
            if len(ids) > MAX_BULK:
                raise BadRequest(f"more than {MAX_BULK} messages match: narrow the search")
            if len(ids) != expected:
                error = f"{len(ids)} messages match now, not {expected}: search again and confirm"
                return json_reply({"error": error, "count": len(ids)}, 409)
            # The filters' names are audited with the ids, never their values (a name searched for).
            asked = ",".join(name for name in FILTERS if name in params and name != "destination")
            detail = f"count={len(ids)} filters={asked} messages={','.join(map(str, ids))}"
            yield self._auditor.record(request, f"{self._action}.bulk", detail=detail)
            if self._action == "resend":
                deliveries = yield self._store.resend(ids, destination=params.get("destination"))
                return json_reply({"count": len(ids), "deliveries": len(deliveries)})
            reprocessed = yield self._store.reprocess(ids)
            return json_reply({"count": len(ids), "reprocessed": reprocessed})

        return answer(request, act)


# A bulk action's name, and the parameters it takes besides the filters and expected_count.
_BULK_ACTIONS: dict[bytes, tuple[str, ...]] = {b"resend": ("destination",), b"reprocess": ()}


class QueuesApi(JsonResource):
    """``/api/queues``: how many deliveries wait in each destination's queue (only queues that hold some)."""

    isLeaf = True

    def __init__(self, store):
        super().__init__()
        self._store = store

    def render_GET(self, request) -> int:
        def depths() -> defer.Deferred:
            request_params(request, ())
            d = self._store.queue_depths()
            return d.addCallback(
                lambda found: json_reply(
                    [
                        {"channel": c, "destination": dest, "depth": n}
                        for (c, dest), n in sorted(found.items())
                    ]
                )
            )

        return answer(request, depths)


_SEARCH_DOC = {
    **FILTER_DOC,
    "limit": "1..500, default 50",
    "before_id": "page: only messages with a smaller id",
}
_BULK_ANSWERS = {
    "400": json_response(f"a filter it cannot use, no expected_count, or more than {MAX_BULK} match"),
    "409": json_response("another count matches now (the body's count); nothing was done"),
}
_EXPECTED = query("expected_count", "how many messages the caller saw match (required)", kind="integer")


def _bulk(summary: str, *more: dict) -> dict:
    return {
        "post": operation(
            summary,
            OPERATOR,
            parameters=[*queries(FILTER_DOC), _EXPECTED, *more],
            ok=json_response("{count, deliveries} or {count, reprocessed}", {"type": "object"}),
            responses=_BULK_ANSWERS,
        )
    }


OPENAPI_PATHS: dict = {
    "/api/messages": {
        "get": operation(
            "Search the stored messages: summaries, newest first (a viewer's without patient_id);"
            " q searches the content",
            VIEWER,
            parameters=queries(_SEARCH_DOC),
        )
    },
    "/api/messages/count": {
        "get": operation(
            "How many messages the search's filters match (what a bulk action acts on)",
            VIEWER,
            parameters=queries(FILTER_DOC),
            ok=json_response("{count}", {"type": "object"}),
        )
    },
    "/api/messages/resend": _bulk(
        "Queue again every message the filters match, for its destinations or one (audited: resend.bulk)",
        query("destination", "only this destination"),
    ),
    "/api/messages/reprocess": _bulk(
        "Run every message the filters match through its channel again (audited: reprocess.bulk)"
    ),
    "/api/messages/{id}": {
        "get": operation(
            f"One message: headers, content at each stage ({', '.join(STAGES)}), deliveries, events"
            " (audited: view); a viewer's with every content field null and content_hidden true",
            VIEWER,
            parameters=[ID],
            responses={"404": {"description": "no such message"}},
        )
    },
    "/api/messages/{id}/raw": {
        "get": operation(
            "The bytes exactly as received (audited: raw)",
            OPERATOR,
            parameters=[ID],
            ok={"description": "the message", "content": {HL7_CONTENT_TYPE.decode(): {}}},
            responses={"404": {"description": "no such message"}, "410": {"description": "content pruned"}},
        )
    },
    "/api/messages/{id}/resend": {
        "post": operation(
            "Queue the message again for its destinations, or one (audited: resend)",
            OPERATOR,
            parameters=[ID, query("destination", "only this destination")],
            responses={"404": {"description": "no such message"}},
        )
    },
    "/api/messages/{id}/reprocess": {
        "post": operation(
            "Run the message through its channel again (audited: reprocess)",
            OPERATOR,
            parameters=[ID],
            responses={"404": {"description": "no such message"}},
        )
    },
    "/api/queues": {
        "get": operation(
            "The deliveries waiting in each destination's queue",
            VIEWER,
            ok=json_response("[{channel, destination, depth}]", {"type": "array"}),
        )
    },
}
