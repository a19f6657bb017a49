"""engine/web/responses.py: every answer is a whole Reply with the common headers, written once or never."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.test.requesthelper import DummyRequest

from engine.errors import StoreError
from engine.web.responses import JsonResource, Reply, ReplyResource, error_reply, json_reply, send, serve

COMMON = {
    b"x-content-type-options": [b"nosniff"],
    b"x-frame-options": [b"DENY"],
    b"referrer-policy": [b"no-referrer"],
    b"cache-control": [b"no-store"],
}


def request(method: bytes = b"GET", path: bytes = b"/api/thing") -> DummyRequest:
    """A twisted.web request double for ``method path``."""
    made = DummyRequest(path.strip(b"/").split(b"/"))
    made.method = method
    made.path = path
    return made


def headers(made: DummyRequest) -> dict[bytes, list[bytes]]:
    """The response headers set so far, names in lower case."""
    return {name.lower(): values for name, values in made.responseHeaders.getAllRawHeaders()}


def test_json_reply_is_compact_utf8_json():
    """json_reply writes compact JSON in UTF-8 (no ASCII escapes); error_reply wraps its text in ``error``."""
    reply = json_reply({"name": "María", "n": [1, 2]}, 201, headers=((b"x-one", b"1"),))
    assert reply == Reply(
        201,
        '{"name":"María","n":[1,2]}'.encode(),
        b"application/json; charset=utf-8",
        ((b"x-one", b"1"),),
    )
    assert json.loads(error_reply(404, "no such resource").body) == {"error": "no such resource"}
    assert error_reply(404, "gone").code == 404


def test_send_sets_status_and_every_header_and_returns_the_body():
    """send sets the code, content type, length, the common headers and the reply's own; returns the body."""
    made = request()
    body = send(made, Reply(418, b"teapot", b"text/plain", ((b"x-extra", b"yes"),)))
    assert (made.responseCode, body, made.written) == (418, b"teapot", [])
    assert headers(made) == {
        **COMMON,
        b"content-type": [b"text/plain"],
        b"x-extra": [b"yes"],
        b"content-length": [b"6"],
    }


def test_serve_answers_when_the_work_fires():
    """serve returns NOT_DONE_YET, then writes the Reply the work fires with and finishes the request."""
    made = request()
    work = defer.Deferred()
    assert serve(made, work) == server.NOT_DONE_YET
    assert (made.written, made.finished) == ([], 0)
    work.callback(json_reply({"ok": True}))
    assert (made.responseCode, made.written, made.finished) == (200, [b'{"ok":true}'], 1)
    assert headers(made)[b"cache-control"] == [b"no-store"]


def test_a_store_error_is_503_and_logged_as_a_warning(log_events):
    """A StoreError answers 503; the log names the request and the error, without a traceback."""
    made = request(b"POST", b"/api/messages/1/resend")
    serve(made, defer.fail(StoreError("the database is locked")))
    assert made.responseCode == 503
    assert json.loads(b"".join(made.written)) == {
        "error": "the message store is not available now; try again later"
    }
    (event,) = [e for e in log_events if e.get("log_namespace") == "engine.web"]
    assert (event["method"], event["path"], event["error"]) == (
        "POST",
        "/api/messages/1/resend",
        "the database is locked",
    )
    assert "log_failure" not in event


def test_any_other_failure_is_500_and_logged_with_its_traceback(log_events):
    """Any other failure answers a bare 500; the failure goes to the log, not to the client."""
    made = request()
    serve(made, defer.fail(ZeroDivisionError("secret detail")))
    assert (made.responseCode, json.loads(b"".join(made.written))) == (500, {"error": "internal error"})
    (event,) = [e for e in log_events if e.get("log_namespace") == "engine.web"]
    assert event["log_failure"].check(ZeroDivisionError)


def test_nothing_is_written_to_a_connection_that_is_gone():
    """When the client went away before the work fired, the answer is dropped: no write, no finish."""
    made = request()
    work = defer.Deferred()
    serve(made, work)
    made.processingFailed(Failure(ConnectionLost()))
    work.callback(json_reply({"late": True}))
    assert (made.responseCode, made.written, made.finished) == (None, [], 0)


class _OnlyGet(JsonResource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return send(request, json_reply({"got": True}))


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones():
    """JsonResource answers a method it lacks with a JSON 405 and an Allow header (not twisted's HTML)."""
    made = request(b"DELETE")
    body = _OnlyGet().render(made)
    assert made.responseCode == 405
    (allowed,) = headers(made)[b"allow"]
    assert sorted(allowed.split(b", ")) == [b"GET", b"HEAD"]
    assert json.loads(body) == {"error": f"use {allowed.decode()}"}
    assert json.loads(_OnlyGet().render(request(b"GET"))) == {"got": True}


def test_a_reply_resource_answers_everything_below_it_the_same():
    """ReplyResource is a leaf: every path and method below it gets its one Reply."""
    refusal = ReplyResource(error_reply(403, "refused"))
    for method, path in ((b"GET", b"/x"), (b"POST", b"/x/y/z")):
        made = request(method, path)
        assert json.loads(refusal.render(made)) == {"error": "refused"}
        assert made.responseCode == 403
