"""The HTTP destination against a real twisted.web receiver on loopback."""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server
from twisted.web.http import stringToDatetime

from engine.channels.destinations.http import HTTPDestination
from engine.channels.destinations.spec import HttpDestinationSettings
from engine.listeners.client import control_id_of
from engine.model import Outcome
from tests.fakes.outbound import ack, delivery, message

SENT, RETRY, ERROR = Outcome.SENT, Outcome.RETRY, Outcome.ERROR


@dataclass
class Answer:
    status: int = 200
    code: str | None = "AA"  # MSA-1 of the ACK body; None for a fixed body
    body: bytes = b""
    delay: float = 0.0
    first: bytes = b""  # written at once when the rest is delayed


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    path: bytes


class Receiver(resource.Resource):
    """An HL7-over-HTTP receiver.

    Records each request and answers with the next scripted Answer (200 AA by default).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.answers: deque[Answer] = deque()
        self.seen: list[Seen] = []
        self.pending = []

    def render_POST(self, request):
        body = request.content.read()
        headers = {
            name.decode().lower(): values[0].decode()
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append(Seen(headers, body, request.path))
        answer = self.answers.popleft() if self.answers else Answer()
        payload = ack(answer.code, control_id_of(body)) if answer.code else answer.body
        request.setResponseCode(answer.status)
        if answer.code:
            request.setHeader(b"Content-Type", b"application/hl7-v2; charset=utf-8")
        if not answer.delay:
            return payload
        if answer.first:
            request.write(answer.first)
        call = reactor.callLater(answer.delay, self._finish, request, payload)
        self.pending.append(call)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return server.NOT_DONE_YET

    @staticmethod
    def _finish(request, payload: bytes) -> None:
        request.write(payload)
        request.finish()


class CountingSite(server.Site):
    """A Site that counts the connections it accepted."""

    connections = 0

    def buildProtocol(self, addr):
        self.connections += 1
        return super().buildProtocol(addr)


@pytest.fixture
def receiver():
    handler = Receiver()
    site = CountingSite(handler)
    port = pytest_twisted.blockon(serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site))
    handler.site = site
    handler.url = f"http://127.0.0.1:{port.getHost().port}/hub/ADT"
    yield handler
    for call in handler.pending:
        if call.active():
            call.cancel()
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def destinations(started):
    """Builds started HTTP destinations, stopped (closing pooled connections) after the test."""

    def build(url: str, **settings) -> HTTPDestination:
        return started(HTTPDestination("lab", HttpDestinationSettings(url=url, **settings), reactor=reactor))

    return build


@pytest_twisted.inlineCallbacks
def test_post_follows_hl7_over_http_and_aa_is_sent(receiver, destinations):
    """The POST carries the payload as is, Content-Type with charset, an RFC 7231 Date.

    Basic auth and extra headers; 200 AA is SENT.
    """
    destination = destinations(
        receiver.url,
        basic_auth={"username": "hub", "password": "s3cret:x"},
        headers={"X-Interface": "ADT"},
    )
    result = yield destination.send(delivery(1))
    assert (result.outcome, result.response_code) == (SENT, "AA")
    assert b"MSA|AA|MSG-1" in result.response
    seen = receiver.seen[0]
    assert seen.path == b"/hub/ADT"
    assert seen.body == message(1)
    assert seen.headers["content-type"] == "application/hl7-v2; charset=utf-8"
    assert abs(stringToDatetime(seen.headers["date"].encode()) - reactor.seconds()) < 5
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"hub:s3cret:x").decode()
    assert seen.headers["x-interface"] == "ADT"


@pytest_twisted.inlineCallbacks
def test_content_type_and_charset_are_configurable(receiver, destinations):
    """content_type and charset set the Content-Type header (HAPI's x-application/hl7-v2+er7 here)."""
    destination = destinations(receiver.url, content_type="x-application/hl7-v2+er7", charset="iso-8859-1")
    yield destination.send(delivery(1))
    assert receiver.seen[0].headers["content-type"] == "x-application/hl7-v2+er7; charset=iso-8859-1"


@pytest.mark.parametrize(
    ("answer", "outcome", "code"),
    [
        (Answer(200, "AE"), ERROR, "AE"),
        (Answer(200, "AR"), RETRY, "AR"),
        (Answer(200, "CA"), SENT, "CA"),
        (Answer(202, "AA"), SENT, "AA"),
        (Answer(500, None, b"oops"), RETRY, "500"),
        (Answer(503, None, b""), RETRY, "503"),
        (Answer(408, None, b""), RETRY, "408"),
        (Answer(429, None, b""), RETRY, "429"),
        (Answer(400, None, b"bad message"), ERROR, "400"),
        (Answer(401, None, b""), ERROR, "401"),
        (Answer(404, None, b""), ERROR, "404"),
        (Answer(200, None, b""), RETRY, ""),
        (Answer(200, None, b"<html>hello</html>"), RETRY, ""),
    ],
    ids=[
        "200-AE",
        "200-AR",
        "200-CA",
        "202-AA",
        "500",
        "503",
        "408",
        "429",
        "400",
        "401",
        "404",
        "200-empty",
        "200-not-hl7",
    ],
)
@pytest_twisted.inlineCallbacks
def test_status_and_ack_map_to_outcomes(receiver, destinations, answer, outcome, code):
    """2xx: the ACK in the body decides (empty or non-HL7 body: unreadable); 4xx except 408/429 is ERROR.

    5xx, 408, 429 RETRY.
    """
    receiver.answers.append(answer)
    result = yield destinations(receiver.url).send(delivery(1))
    assert (result.outcome, result.response_code) == (outcome, code)


@pytest_twisted.inlineCallbacks
def test_ack_for_another_message_is_a_mismatch(receiver, destinations):
    """A 200 whose ACK answers another control id is the mismatch case (RETRY by default)."""
    receiver.answers.append(Answer(200, None, ack("AA", "MSG-999")))
    result = yield destinations(receiver.url).send(delivery(1))
    assert result.outcome == RETRY and "MSG-999" in result.reason


@pytest_twisted.inlineCallbacks
def test_slow_receiver_times_out_as_retry(receiver, destinations):
    """No response within timeout_seconds is RETRY; the request is abandoned."""
    receiver.answers.append(Answer(200, "AA", delay=3.0))
    result = yield destinations(receiver.url, timeout_seconds=0.3).send(delivery(1))
    assert result.outcome == RETRY and "no response within 0.3s" in result.reason


@pytest_twisted.inlineCallbacks
def test_a_body_that_stalls_times_out_as_retry(receiver, destinations):
    """The timeout covers reading the body too: headers and a first chunk, then silence, is RETRY."""
    receiver.answers.append(Answer(200, "AA", delay=3.0, first=b"MSH|^~\\&|"))
    result = yield destinations(receiver.url, timeout_seconds=0.3).send(delivery(1))
    assert result.outcome == RETRY and "no response within 0.3s" in result.reason


@pytest_twisted.inlineCallbacks
def test_a_response_body_past_the_limit_is_unreadable(receiver, destinations):
    """A body longer than max_reply_bytes is not buffered: the unreadable case (RETRY)."""
    receiver.answers.append(Answer(200, None, b"MSH|" + b"x" * 5000))
    result = yield destinations(receiver.url, max_reply_bytes=1024).send(delivery(1))
    assert result.outcome == RETRY and "longer than 1024 bytes" in result.reason


@pytest_twisted.inlineCallbacks
def test_connection_refused_is_retry(closed_port, destinations):
    """Nobody listening is RETRY with the reason; send never errbacks."""
    result = yield destinations(f"http://127.0.0.1:{closed_port}/").send(delivery(1))
    assert result.outcome == RETRY and "refused" in result.reason.lower()


@pytest_twisted.inlineCallbacks
def test_connect_timeout_is_retry(unanswered_port, destinations):
    """A connection that cannot be made within timeout_seconds is RETRY with the timeout as reason."""
    result = yield destinations(f"http://127.0.0.1:{unanswered_port}/", timeout_seconds=0.3).send(delivery(1))
    assert result.outcome == RETRY and "no response within 0.3s" in result.reason


@pytest_twisted.inlineCallbacks
def test_connections_are_kept_in_a_pool(receiver, destinations):
    """Messages sent one after another reuse one persistent connection."""
    destination = destinations(receiver.url)
    for n in range(1, 4):
        assert (yield destination.send(delivery(n))).outcome == SENT
    assert receiver.site.connections == 1


@pytest_twisted.inlineCallbacks
def test_encoding_xml_posts_v2_xml_and_reads_a_v2_xml_ack(receiver, destinations):
    """encoding: xml POSTs v2.xml as application/hl7-v2+xml; a v2.xml AA answering it is SENT."""
    from engine.hl7.xml import from_xml, to_xml

    receiver.answers.append(Answer(code=None, body=to_xml(ack("AA", "MSG-1").decode())))
    result = yield destinations(receiver.url, encoding="xml").send(delivery(1))
    assert (result.outcome, result.response_code) == (SENT, "AA")
    seen = receiver.seen[0]
    assert seen.headers["content-type"] == "application/hl7-v2+xml; charset=utf-8"
    assert seen.body.startswith(b"<?xml") and b'xmlns="urn:hl7-org:v2xml"' in seen.body
    assert from_xml(seen.body) == message(1).decode().rstrip("\r")


@pytest_twisted.inlineCallbacks
def test_encoding_xml_through_a_stylesheet_posts_what_it_gives(receiver, destinations):
    """With xslt:, the stylesheet's output (here text naming MSH-10) is the body, with its YAML parameters."""
    stylesheet = (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"'
        ' xmlns:hl7="urn:hl7-org:v2xml"><xsl:output method="text"/><xsl:param name="prefix"/>'
        '<xsl:template match="/"><xsl:value-of select="concat($prefix, //hl7:MSH.10)"/></xsl:template>'
        "</xsl:stylesheet>"
    )
    receiver.answers.append(Answer(code=None, body=ack("AA", "MSG-2")))
    settings = {"encoding": "xml", "xslt": {"inline": stylesheet, "parameters": {"prefix": "id="}}}
    result = yield destinations(receiver.url, **settings).send(delivery(2))
    assert result.outcome == SENT
    assert receiver.seen[0].body == b"id=MSG-2"


@pytest_twisted.inlineCallbacks
def test_a_message_without_v2_xml_form_is_an_error_not_posted(receiver, destinations):
    """A payload that has no v2.xml form is ERROR with the reason; nothing is POSTed."""
    result = yield destinations(receiver.url, encoding="xml").send(delivery(3, payload=b"MSH|^~\\&|A\r|x\r"))
    assert result.outcome == ERROR and result.reason.startswith("cannot encode the message:")
    assert receiver.seen == []
