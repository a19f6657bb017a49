"""Where alerts are told in tests: a webhook and an SMTP server, both Twisted servers on 127.0.0.1."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import Message

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.mail import smtp
from twisted.web import resource, server
from zope.interface import implementer


class _Hook(resource.Resource):
    isLeaf = True

    def __init__(self, received: list[dict], codes: list[int]):
        super().__init__()
        self.received = received
        self.codes = codes

    def render_POST(self, request) -> bytes:
        self.received.append(json.loads(request.content.read()))
        request.setResponseCode(self.codes.pop(0) if self.codes else 204)
        return b""


class Webhook:
    """A web server that keeps every JSON body POSTed to it; answers 204 (or the ``codes`` queued first)."""

    def __init__(self):
        self.received: list[dict] = []
        self.codes: list[int] = []
        self._port = None

    @defer.inlineCallbacks
    def start(self):
        """Listen on an ephemeral loopback port; fires with the URL to POST to."""
        site = server.Site(_Hook(self.received, self.codes))
        self._port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        return f"http://127.0.0.1:{self._port.getHost().port}/hook"

    def stop(self) -> defer.Deferred:
        return self._port.stopListening()


@implementer(smtp.IMessage)
class _Mail:
    def __init__(self, kept: list[Message]):
        self.kept = kept
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred:
        self.kept.append(message_from_bytes(b"\n".join(self.lines)))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, kept: list[Message]):
        self.kept = kept

    def receivedHeader(self, helo, origin, recipients) -> bytes:
        return b"Received: by the test SMTP server"

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: _Mail(self.kept)


class SMTPServer:
    """An SMTP server that accepts every mail and keeps it (parsed), without TLS or authentication."""

    def __init__(self):
        self.mails: list[Message] = []
        self._port = None

    @defer.inlineCallbacks
    def start(self):
        """Listen on an ephemeral loopback port; fires with the port."""
        factory = smtp.SMTPFactory()
        delivery = _Delivery(self.mails)

        def build(addr):
            protocol = smtp.SMTP(delivery)
            protocol.factory = factory
            return protocol

        factory.buildProtocol = build
        self._port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        return self._port.getHost().port

    def stop(self) -> defer.Deferred:
        return self._port.stopListening()
