"""The HTTP client the http and fhir destinations share: one pooled Agent, a timeout, a capped reply.

``HttpClient.post`` fires with an ``HttpReply`` (any status) or fails with ``ReplyTooLong`` or
``RequestFailed`` (refused, reset, unresolvable, no answer in time): the destination decides what
each means for its delivery.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from twisted.internet import defer, error, protocol
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

from engine.channels.destinations.spec import BasicAuth

__all__ = [
    "RETRYABLE_STATUSES",
    "HttpClient",
    "HttpReply",
    "ReplyTooLong",
    "RequestFailed",
    "request_headers",
]

_REQUEST_FAILURES = (
    error.ConnectError,
    error.DNSLookupError,
    ResponseFailed,  # and ResponseNeverReceived
    RequestTransmissionFailed,
    RequestNotSent,
    defer.CancelledError,
    error.ConnectingCancelledError,  # the timeout struck while connecting
)
#: Statuses besides 5xx that say "not now": try again later.
RETRYABLE_STATUSES = frozenset({408, 429})


class ReplyTooLong(Exception):
    """The response body grew past max_reply_bytes."""


class RequestFailed(Exception):
    """No answer: the request could not be sent, or the response not read, or not in time."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A response: its status, reason phrase and body."""

    status: int
    phrase: str
    body: bytes


def request_headers(
    configured: Mapping[str, str], basic_auth: BasicAuth | None, fixed: Mapping[str, str]
) -> dict[str, list[str]]:
    """A destination's request headers: its configured ones, then ``fixed`` (Content-Type...), then
    the Authorization header of its Basic credentials (none without)."""
    headers = {name: [value] for name, value in {**configured, **fixed}.items()}
    if basic_auth is not None:
        credentials = f"{basic_auth.username}:{basic_auth.password.get_secret_value()}"
        headers["Authorization"] = ["Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")]
    return headers


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
            finished.errback(ReplyTooLong())
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


class HttpClient:
    """POSTs over a persistent connection pool, each request bounded in time and reply size."""

    def __init__(self, reactor, *, timeout_seconds: float, max_reply_bytes: int):
        self._reactor = reactor
        self._timeout = timeout_seconds
        self._max_reply_bytes = max_reply_bytes
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent(reactor, connectTimeout=timeout_seconds, pool=self._pool)

    def stop(self) -> defer.Deferred:
        """Close the pooled connections; fires when they are closed."""
        return self._pool.closeCachedConnections()

    @defer.inlineCallbacks
    def post(self, url: str, headers: dict[str, list[str]], body: bytes):
        """POST ``body`` with ``headers`` (and a Date); fires with an HttpReply.

        Fails with ReplyTooLong, or RequestFailed saying what went wrong (in its message).
        """
        headers = Headers({**headers, "Date": [datetimeToString(self._reactor.seconds()).decode("ascii")]})
        request = self._agent.request(b"POST", url.encode("ascii"), headers, _Body(body))
        request.addCallback(self._read)
        timed_out = []

        def give_up() -> None:
            timed_out.append(True)
            request.cancel()

        timer = self._reactor.callLater(self._timeout, give_up)
        try:
            response, reply = yield request
        except _REQUEST_FAILURES as exc:
            if timed_out:
                raise RequestFailed(f"no response within {self._timeout:g}s") from None
            raise RequestFailed(f"POST to {url} failed: {_describe(exc)}") from None
        finally:
            if timer.active():
                timer.cancel()
        return HttpReply(response.code, response.phrase.decode("latin-1", errors="replace"), reply)

    def _read(self, response) -> defer.Deferred:
        """Fires with (response, body), the body capped at max_reply_bytes."""
        reader = _BoundedBody(self._max_reply_bytes)
        finished = reader.finished  # an empty body finishes (and clears it) inside deliverBody
        response.deliverBody(reader)
        return finished.addCallback(lambda body: (response, body))
