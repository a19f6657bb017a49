"""The MLLP destination: a Twisted client that sends one message at a time and reads its ACK.

One connection is kept open between messages (or opened per message, with ``keep_alive: false``)
and reopened lazily on the next send after a drop. Only one message is in flight: concurrent
``send`` calls wait in a queue and are served in order, as the standard asks (HL7-NOTES §1).
Framing is the listener's (``engine.listeners.mllp``); what the ACK means is ``policy.decide``'s.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from functools import partial

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.destinations.policy import decide, unexpected_failure
from engine.channels.destinations.spec import MllpSettings, TlsSettings
from engine.channels.stages import Delivery, DeliveryResult, Outcome
from engine.listeners.client import parse_reply
from engine.listeners.mllp import MLLPFramer, frame

__all__ = ["MLLPDestination"]

log = Logger()

_CONNECT_FAILURES = (error.ConnectError, error.DNSLookupError)


class _ReplyTooLong(Exception):
    """The reply frame grew past max_reply_bytes."""


class _ConnectionClosed(Exception):
    """The connection ended before the reply arrived."""


class _Connection(MLLPFramer):
    """One client connection: writes a framed message and hands back the one reply frame.

    ``request`` fires with the reply payload, or with None when no reply came in time (the
    connection is then aborted, so a late ACK cannot be taken for the next message); it errbacks
    with _ConnectionClosed or _ReplyTooLong.
    """

    def __init__(self, *, max_reply_bytes: int, clock, on_lost: Callable[[_Connection], None], where: str):
        super().__init__()
        self.max_frame_bytes = max_reply_bytes
        self.open = False
        self._clock = clock
        self._on_lost = on_lost
        self._where = where
        self._waiting: defer.Deferred | None = None
        self._timer = None
        self._closed_waiters: list[defer.Deferred] = []

    def connectionMade(self) -> None:
        self.open = True

    def request(self, payload: bytes, timeout: float) -> defer.Deferred:
        """Send one payload; fires with the reply's payload, or None on timeout."""
        self._waiting = defer.Deferred()
        self._timer = self._clock.callLater(timeout, self._timed_out)
        self.transport.write(frame(payload))
        # Twisted sends what was written on the reactor's next turn; with one message in flight,
        # every turn is on the path of every message, so a plain TCP transport sends it now.
        # (TLS goes through its own protocol and keeps the reactor's pace.)
        send_now = getattr(self.transport, "doWrite", None)
        if send_now is not None and send_now() is not None:  # the reactor's sign that the connection is lost
            self.transport.abortConnection()
        return self._waiting

    def frameReceived(self, payload: bytes) -> None:
        waiting = self._settle()
        if waiting is None:
            log.warn("mllp destination {where}: a reply arrived with no message in flight; closing", where=self._where)
            self.shut(abort=False)
            return
        waiting.callback(payload)

    def frameTooLong(self, head: bytes) -> None:
        waiting = self._settle()
        self.shut(abort=True)
        if waiting is not None:
            waiting.errback(_ReplyTooLong())

    def _timed_out(self) -> None:
        self._timer = None
        waiting = self._settle()
        self.shut(abort=True)
        if waiting is not None:
            waiting.callback(None)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.open = False
        waiting = self._settle()
        if waiting is not None:
            waiting.errback(_ConnectionClosed(reason.getErrorMessage()))
        self._on_lost(self)
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _settle(self) -> defer.Deferred | None:
        """Take the pending request (if any) and stop its timer."""
        waiting, self._waiting = self._waiting, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return waiting

    def shut(self, *, abort: bool) -> None:
        """Stop using this connection now (it is no longer ``open``) and close it, abruptly or not."""
        self.open = False
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def close(self, grace: float) -> defer.Deferred:
        """Close the connection, aborting it after ``grace`` seconds; fires once it is closed."""
        if not self.open:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._closed_waiters.append(waiter)
        self.transport.loseConnection()
        # A peer that stops reading would keep a graceful close (and so a stop) waiting forever.
        abort = self._clock.callLater(grace, self.transport.abortConnection)
        return waiter.addBoth(_cancel_call, abort)


def _cancel_call(result, call):
    if call.active():
        call.cancel()
    return result


def _certificates(path) -> list[Certificate]:
    data = path.read_bytes()
    return [Certificate.loadPEM(block) for block in re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.DOTALL)]


def _tls_options(host: str, tls: TlsSettings):
    """The client TLS settings: trusted CAs, our certificate for mutual TLS, hostname check."""
    trust = trustRootFromCertificates(_certificates(tls.ca_file)) if tls.ca_file else platformTrust()
    client = None
    if tls.cert_file is not None and tls.key_file is not None:
        client = PrivateCertificate.loadPEM(tls.cert_file.read_bytes() + b"\n" + tls.key_file.read_bytes())
    if tls.verify_hostname:
        return optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)
    # The chain is still verified against the trusted CAs; only the name in it is not checked.
    return CertificateOptions(
        trustRoot=trust,
        privateKey=client.privateKey.original if client else None,
        certificate=client.original if client else None,
    )


class MLLPDestination:
    """Sends each delivery over MLLP and maps the downstream ACK to an outcome.

    TLS material is read here, once, when the destination is built (at start-up).
    """

    def __init__(self, name: str, settings: MllpSettings, *, reactor):
        self.name = name
        self.settings = settings
        self._reactor = reactor
        self._where = f"{name} ({settings.host}:{settings.port})"
        endpoint = HostnameEndpoint(reactor, settings.host, settings.port, timeout=settings.connect_timeout_seconds)
        if settings.tls is not None:
            endpoint = wrapClientTLS(_tls_options(settings.host, settings.tls), endpoint)
        self._endpoint = endpoint
        self._factory = protocol.Factory.forProtocol(
            partial(_Connection, max_reply_bytes=settings.max_reply_bytes, clock=reactor, on_lost=self._connection_lost, where=self._where)
        )
        self._connection: _Connection | None = None
        self._queue: deque[tuple[Delivery, defer.Deferred]] = deque()
        self._busy = False
        self._serving = False
        self._stopped = False
        self._idle_waiters: list[defer.Deferred] = []

    def start(self) -> None:
        """Accept sends again; the connection opens on the first one."""
        self._stopped = False

    def stop(self) -> defer.Deferred:
        """Let the message in flight finish, answer queued ones RETRY, close; fires when closed."""
        self._stopped = True
        while self._queue:
            _, waiter = self._queue.popleft()
            waiter.callback(DeliveryResult(Outcome.RETRY, reason="the destination stopped before sending"))
        if self._busy:
            idle = defer.Deferred()
            self._idle_waiters.append(idle)
        else:
            idle = defer.succeed(None)
        return idle.addCallback(lambda _: self._close())

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Fires with a DeliveryResult once this message (after those queued before it) is answered."""
        if self._stopped:
            return defer.succeed(DeliveryResult(Outcome.RETRY, reason="the destination is stopped"))
        waiter = defer.Deferred()
        self._queue.append((delivery, waiter))
        self._serve()
        return waiter

    def _serve(self) -> None:
        # The guard keeps attempts that finish at once from recursing once per queued message.
        if self._serving:
            return
        self._serving = True
        try:
            while self._queue and not self._busy:
                delivery, waiter = self._queue.popleft()
                self._busy = True
                attempt = self._attempt(delivery)
                attempt.addErrback(unexpected_failure, self.name)
                attempt.addCallback(self._finished, waiter)
        finally:
            self._serving = False

    def _finished(self, result: DeliveryResult, waiter: defer.Deferred) -> None:
        self._busy = False
        waiter.callback(result)
        if not self._queue:
            waiters, self._idle_waiters = self._idle_waiters, []
            for idle in waiters:
                idle.callback(None)
        self._serve()

    @defer.inlineCallbacks
    def _attempt(self, delivery: Delivery):
        settings = self.settings
        connection = self._connection
        try:
            if connection is None or not connection.open:
                connection = yield self._connect()
        except (error.TimeoutError, defer.TimeoutError, error.ConnectingCancelledError):
            # ConnectingCancelledError: the connect_timeout cancelled HostnameEndpoint's attempt.
            where = f"{settings.host}:{settings.port}"
            return DeliveryResult(Outcome.RETRY, reason=f"no connection to {where} within {settings.connect_timeout_seconds:g}s")
        except _CONNECT_FAILURES as exc:
            return DeliveryResult(Outcome.RETRY, reason=f"cannot connect to {settings.host}:{settings.port}: {exc}")
        try:
            reply = yield connection.request(delivery.payload, settings.ack_timeout_seconds)
        except _ConnectionClosed as exc:
            return DeliveryResult(Outcome.RETRY, reason=f"the connection closed before the ACK arrived: {exc}")
        except _ReplyTooLong:
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id)
            return DeliveryResult(result.outcome, reason=f"the reply was longer than {settings.max_reply_bytes} bytes; connection dropped")
        if reply is None:
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id, timed_out=True)
            return DeliveryResult(result.outcome, reason=f"no ACK within {settings.ack_timeout_seconds:g}s; connection dropped")
        if parse_reply(reply).control_id != delivery.control_id:
            # A reply that does not answer this message (another control id, or no MSA): replies and
            # messages may be out of step, and the real ACK may still come, so start afresh.
            self._drop(connection, abort=True)
        elif not settings.keep_alive:
            self._drop(connection, abort=False)
        return decide(settings.ack_policy, reply, sent_control_id=delivery.control_id)

    @defer.inlineCallbacks
    def _connect(self):
        """A new connection, kept for the next sends."""
        connecting = self._endpoint.connect(self._factory)
        connecting.addTimeout(self.settings.connect_timeout_seconds, self._reactor)
        connection = yield connecting
        log.info("mllp destination {where}: connected", where=self._where)
        self._connection = connection
        return connection

    def _connection_lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
        log.info("mllp destination {where}: connection closed", where=self._where)

    def _drop(self, connection: _Connection, *, abort: bool) -> None:
        """Stop using this connection at once; the next send opens a new one."""
        if self._connection is connection:
            self._connection = None
        connection.shut(abort=abort)

    def _close(self) -> defer.Deferred:
        connection, self._connection = self._connection, None
        if connection is None:
            return defer.succeed(None)
        return connection.close(grace=self.settings.connect_timeout_seconds)
