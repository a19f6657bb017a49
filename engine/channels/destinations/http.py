"""The HTTP destination: POST each message the HL7-over-HTTP way and read the ACK in the reply.

HAPI's HL7 over HTTP (docs/hl7.md §9): the body is the message with ``Content-Type`` naming the
HL7 media type and charset, and a ``Date`` header. Every HL7 reply, negative ones included,
comes back 2xx with the ACK as body; a non-2xx status means the message was not understood
(4xx: resending it unchanged fails again) or not processed (5xx, 408, 429: try later).
"""

from __future__ import annotations

import base64

from twisted.internet import defer, error, protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from engine.channels.destinations.base import Destination
from engine.channels.destinations.encoding import encode_payload, reply_as_er7
from engine.channels.destinations.policy import decide, unexpected_failure
from engine.channels.destinations.spec import HttpDestinationSettings
from engine.errors import HL7Error, TransformError
from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["HTTPDestination"]

_REQUEST_FAILURES = (
    error.ConnectError,
    error.DNSLookupError,
    ResponseFailed,  # and ResponseNeverReceived
    RequestTransmissionFailed,
    RequestNotSent,
    defer.CancelledError,
    error.ConnectingCancelledError,  # the timeout struck while connecting
)
_RETRYABLE_STATUSES = frozenset({408, 429})


class _ReplyTooLong(Exception):
    """The response body grew past max_reply_bytes."""


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory."""

    def __init__(self, data: bytes):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer) -> defer.Deferred:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BoundedBody(protocol.Protocol):
    """Collects a response body up to ``limit`` bytes (``readBody`` has no limit)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.finished = defer.Deferred(self._cancel)
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self._size += len(data)
        if self._size > self.limit:
            finished, self.finished = self.finished, None
            self.transport.stopProducing()
            finished.errback(_ReplyTooLong())
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.finished is None:
            return
        finished, self.finished = self.finished, None
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(b"".join(self._parts))
        else:
            finished.errback(reason)

    def _cancel(self, finished: defer.Deferred) -> None:
        self.finished = None
        self.transport.stopProducing()


def _describe(exc: Exception) -> str:
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return "; ".join(reason.getErrorMessage() for reason in reasons)
    return str(exc) or type(exc).__name__


class HTTPDestination(Destination):
    """POSTs each delivery to ``settings.url`` over a persistent connection pool; the ACK decides."""

    def __init__(self, name: str, settings: HttpDestinationSettings, *, reactor):
        super().__init__(name)
        self.settings = settings
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent(reactor, connectTimeout=settings.timeout_seconds, pool=self._pool)
        self._url = settings.url.encode("ascii")
        headers = {name: [value] for name, value in settings.headers.items()}
        headers["Content-Type"] = [f"{settings.media_type}; charset={settings.charset}"]
        if settings.basic_auth is not None:
            credentials = f"{settings.basic_auth.username}:{settings.basic_auth.password.get_secret_value()}"
            headers["Authorization"] = [
                "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
            ]
        self._headers = headers

    def stop(self) -> defer.Deferred:
        """Close the pooled connections; fires when they are closed."""
        return self._pool.closeCachedConnections()

    def send(self, delivery: Delivery) -> defer.Deferred:
        """POST the payload; fires with a DeliveryResult (never errbacks)."""
        return self._post(delivery).addErrback(unexpected_failure, self.name)

    @defer.inlineCallbacks
    def _post(self, delivery: Delivery):
        settings = self.settings
        content = delivery.payload
        if settings.encoding != "er7":  # encoded in the thread pool, not on the reactor
            pool = self._reactor.getThreadPool()
            try:
                content = yield deferToThreadPool(
                    self._reactor, pool, encode_payload, delivery.payload, settings, settings.charset
                )
            except (HL7Error, TransformError) as exc:
                return DeliveryResult(Outcome.ERROR, reason=f"cannot encode the message: {exc}")
        headers = Headers(
            {**self._headers, "Date": [datetimeToString(self._reactor.seconds()).decode("ascii")]}
        )
        request = self._agent.request(b"POST", self._url, headers, _Body(content))
        request.addCallback(self._read)
        timed_out = []

        def give_up() -> None:
            timed_out.append(True)
            request.cancel()

        timer = self._reactor.callLater(settings.timeout_seconds, give_up)
        try:
            response, body = yield request
        except _ReplyTooLong:
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id)
            return DeliveryResult(
                result.outcome, reason=f"the response was longer than {settings.max_reply_bytes} bytes"
            )
        except _REQUEST_FAILURES as exc:
            if timed_out:
                return DeliveryResult(
                    Outcome.RETRY, reason=f"no response within {settings.timeout_seconds:g}s"
                )
            return DeliveryResult(Outcome.RETRY, reason=f"POST to {settings.url} failed: {_describe(exc)}")
        finally:
            if timer.active():
                timer.cancel()
        status = response.code
        if 200 <= status < 300:
            return decide(settings.ack_policy, reply_as_er7(body), sent_control_id=delivery.control_id)
        phrase = response.phrase.decode("latin-1", errors="replace")
        outcome = Outcome.RETRY if status >= 500 or status in _RETRYABLE_STATUSES else Outcome.ERROR
        return DeliveryResult(
            outcome, response=body or None, response_code=str(status), reason=f"HTTP {status} {phrase}"
        )

    def _read(self, response) -> defer.Deferred:
        """Fires with (response, body), the body capped at max_reply_bytes."""
        reader = _BoundedBody(self.settings.max_reply_bytes)
        finished = reader.finished  # an empty body finishes (and clears it) inside deliverBody
        response.deliverBody(reader)
        return finished.addCallback(lambda body: (response, body))
