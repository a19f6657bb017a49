"""MLLP (Minimal Lower Layer Protocol) over TCP: the server protocol and its service.

Frames are collected by ``engine.hl7.mllp.FrameCollector`` (bytes only). What a frame means is
the business of the handler the factory is given (``engine.channels.intake.Intake``).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from twisted.application import service
from twisted.internet import defer, protocol, ssl, tcp
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from engine.hl7.mllp import FrameCollector, frame
from engine.listeners.admission import Admission, Network
from engine.listeners.endpoints import listen_reusing_port, with_backlog
from engine.listeners.tls import tls_error, with_tls

log = Logger()


class FrameHandler(TypingProtocol):
    """What the MLLP server hands each frame to: returns the reply payload, or None for no reply."""

    def handle(self, payload: bytes, peer: str) -> defer.Deferred: ...

    def internal_error(self, payload: bytes, reason: str) -> bytes: ...

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes: ...


class MLLPServerProtocol(FrameCollector, protocol.Protocol):
    """One sender's connection: frames are handled and answered strictly in order.

    While one frame is being handled, later frames wait in a queue; past ``max_queued`` the
    transport stops reading, so a sender that pipelines cannot grow memory without bound.

    A connection is idle when no frame started or was answered, and none was arriving or in
    flight, for ``idle_timeout`` seconds; then it is closed. Bytes outside frames are not activity,
    so a sender trickling noise is closed as idle. A frame must arrive whole within
    ``frame_timeout`` seconds of its start byte, or the connection is closed: a sender trickling a
    frame byte by byte cannot hold the connection. Both timers are lazy: a frame only notes the
    time, and the one pending call checks when it fires (moving a timer on every message costs
    more than the message's framing).
    """

    max_queued = 32

    def __init__(
        self,
        handler: FrameHandler,
        *,
        max_frame_bytes: int,
        idle_timeout: float | None,
        peer: str,
        frame_timeout: float | None = None,
    ):
        super().__init__()
        self.handler = handler
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.peer = peer
        self._queue: deque[bytes] = deque()
        self._busy = False
        self._paused = False
        self._closed = False
        self._quiet_since = 0.0  # when a frame last started or was answered
        self._idle_check = None
        self._frame_started = 0.0  # when the frame arriving now began
        self._frame_check = None
        self.clock = None  # the reactor (its seconds() and callLater()); set by the factory
        self._socket = None  # set in connectionMade on plain TCP

    def connectionMade(self) -> None:
        # A plain TCP connection's socket, which replies are sent on directly (see _send).
        self._socket = self.transport.getHandle() if isinstance(self.transport, tcp.Connection) else None
        if self.idle_timeout is not None:
            self._quiet_since = self.clock.seconds()
            self._idle_check = self.clock.callLater(self.idle_timeout, self._check_idle)
        self.factory.connection_opened(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closed = True
        for check in (self._idle_check, self._frame_check):
            if check is not None and check.active():
                check.cancel()
        self._idle_check = self._frame_check = None
        self._queue.clear()
        error = tls_error(reason)
        if error is not None:
            log.info("mllp connection from {peer}: TLS failed: {error}", peer=self.peer, error=error)
            self.factory.tls_failed()
        self.factory.connection_closed(self)

    def _check_idle(self) -> None:
        self._idle_check = None
        if self._closed:
            return
        # In flight counts as activity: a slow store must not time out the sender waiting for it.
        # A frame arriving does too; how long it may take is the frame timeout's business.
        remaining = (
            self.idle_timeout
            if self._busy or self.in_frame
            else self._quiet_since + self.idle_timeout - self.clock.seconds()
        )
        if remaining > 0:
            self._idle_check = self.clock.callLater(remaining, self._check_idle)
            return
        log.info(
            "mllp connection from {peer} idle for {timeout}s: closing",
            peer=self.peer,
            timeout=self.idle_timeout,
        )
        self.transport.loseConnection()

    def frameStarted(self) -> None:
        if self._idle_check is None and self.frame_timeout is None:
            return
        now = self.clock.seconds()
        self._quiet_since = self._frame_started = now
        if self.frame_timeout is not None and self._frame_check is None:
            self._frame_check = self.clock.callLater(self.frame_timeout, self._check_frame)

    def _check_frame(self) -> None:
        self._frame_check = None
        if self._closed or not self.in_frame:
            return  # the next frame's start sets the timer again
        remaining = self._frame_started + self.frame_timeout - self.clock.seconds()
        if remaining > 0:
            self._frame_check = self.clock.callLater(remaining, self._check_frame)
            return
        log.warn(
            "mllp frame from {peer} not complete {timeout}s after its start: closing",
            peer=self.peer,
            timeout=self.frame_timeout,
        )
        self.factory.frame_timed_out()
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        before = self.discarded_bytes
        super().dataReceived(data)
        if self.discarded_bytes != before:
            self.factory.bytes_discarded(self.discarded_bytes - before)

    def frameReceived(self, payload: bytes) -> None:
        if self._closed:  # closing after a failure: what else the last read held is dropped
            return
        self._queue.append(payload)
        if len(self._queue) >= self.max_queued and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._process_next()

    def frameTooLong(self, head: bytes) -> None:
        log.warn(
            "mllp frame from {peer} exceeds {limit} bytes: answered AR and closed",
            peer=self.peer,
            limit=self.max_frame_bytes,
        )
        self.factory.frame_too_long()
        reply = self.handler.too_long(head, self.max_frame_bytes, self.peer)
        # Earlier frames of this connection are answered first; then the NAK, then close.
        self._queue.append(_TooLong(reply))
        self._process_next()

    def _process_next(self) -> None:
        while self._queue and not self._busy and not self._closed:
            item = self._queue.popleft()
            if self._paused and len(self._queue) < self.max_queued // 2:
                self._paused = False
                self.transport.resumeProducing()
            if isinstance(item, _TooLong):
                self.transport.write(frame(item.reply))
                self.transport.loseConnection()
                return
            self._busy = True
            self.factory.in_flight += 1
            try:
                d = self.handler.handle(item, self.peer)
            except Exception:
                d = defer.fail()
            if isinstance(d, defer.Deferred):
                d.addCallbacks(self._reply, self._internal_error, errbackArgs=(item,))
                d.addErrback(self._unanswerable)
            else:
                self._reply(d)

    def _internal_error(self, failure: Failure, payload: bytes) -> None:
        # The exception's text may quote the message (patient data): only its type goes above debug.
        log.error(
            "mllp handler failed for a frame from {peer} ({error}); answering AR 207",
            peer=self.peer,
            error=_described(failure),
        )
        log.failure("mllp handler failure", failure, level=LogLevel.debug)
        self._reply(self.handler.internal_error(payload, failure.getErrorMessage()))

    def _unanswerable(self, failure: Failure) -> None:
        """Even the answer to a failure failed: close the connection, so that it never stays busy."""
        log.error(
            "mllp connection from {peer}: a frame could not be answered ({error}); closing",
            peer=self.peer,
            error=_described(failure),
        )
        log.failure("mllp answer failure", failure, level=LogLevel.debug)
        self._queue.clear()
        if self._busy:
            self._busy = False
            self.factory.in_flight -= 1
        self._closed = True  # nothing more is handled on it; connectionLost follows
        self.transport.loseConnection()
        self.factory.in_flight_done()

    def _reply(self, reply: bytes | None) -> None:
        self._busy = False
        self.factory.in_flight -= 1
        if self._closed:
            self.factory.in_flight_done()
            return
        if reply is not None:
            self._send(frame(reply))
        if self._idle_check is not None:
            self._quiet_since = self.clock.seconds()
        self.factory.in_flight_done()
        self._process_next()

    def _send(self, data: bytes) -> None:
        """Send a reply now: the sender waits for it before its next message.

        Twisted sends what is written on the reactor's next turn, after asking epoll to watch the
        socket for writing and then not to (two system calls a reply). On plain TCP, while
        nothing written before waits in the transport, the reply goes straight to the socket;
        what the socket does not take goes to the transport, and so does every later reply of
        the connection, which keeps them in order. TLS keeps its own pace.
        """
        sock = self._socket
        if sock is not None:
            try:
                sent = sock.send(data)
            except BlockingIOError:  # the socket's buffer is full
                sent = 0
            except OSError as error:
                if error.errno != errno.ENOBUFS:  # the connection is lost: connectionLost follows
                    self.transport.abortConnection()
                    return
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
            self._socket = None
        self.transport.write(data)
        send_now = getattr(self.transport, "doWrite", None)
        if send_now is not None and send_now() is not None:  # the reactor's sign that the connection is lost
            self.transport.abortConnection()

    @property
    def busy(self) -> bool:
        """True while a frame of this connection is being handled or waits to be."""
        return self._busy or bool(self._queue)


def _described(failure: Failure) -> str:
    """Where a failure was raised and its type, without its text (which may quote the message)."""
    where = failure.frames[-1] if failure.frames else None
    at = f" at {where[1].rsplit('/', 1)[-1]}:{where[2]}" if where else ""
    return f"{failure.type.__name__}{at}"


class _TooLong:
    __slots__ = ("reply",)

    def __init__(self, reply: bytes):
        self.reply = reply


class MLLPServerFactory(protocol.Factory):
    """Builds one protocol per connection and keeps what a graceful stop needs to know."""

    def __init__(
        self,
        handler: FrameHandler,
        *,
        reactor,
        max_frame_bytes: int,
        idle_timeout: float | None,
        frame_timeout: float | None = None,
        observer: Callable[[str, int], None] | None = None,
    ):
        self.handler = handler
        self.reactor = reactor
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.connections: set[MLLPServerProtocol] = set()
        self.in_flight = 0  # connections with a frame being handled
        self.observer = observer or (lambda event, amount: None)  # (event, amount), e.g. for metrics
        self._drain_waiters: list[defer.Deferred] = []

    def buildProtocol(self, addr) -> MLLPServerProtocol:
        peer = f"{getattr(addr, 'host', addr)}:{getattr(addr, 'port', '')}"
        proto = MLLPServerProtocol(
            self.handler,
            max_frame_bytes=self.max_frame_bytes,
            idle_timeout=self.idle_timeout,
            frame_timeout=self.frame_timeout,
            peer=peer,
        )
        proto.factory = self
        proto.clock = self.reactor
        return proto

    def connection_opened(self, proto: MLLPServerProtocol) -> None:
        self.connections.add(proto)
        self.observer("connection_opened", 1)

    def connection_closed(self, proto: MLLPServerProtocol) -> None:
        self.connections.discard(proto)
        self.observer("connection_closed", 1)
        self.in_flight_done()

    @property
    def idle_connections(self) -> int:
        """Open connections with no frame being handled: senders that may send at any moment."""
        return max(0, len(self.connections) - self.in_flight)

    def bytes_discarded(self, amount: int) -> None:
        self.observer("bytes_discarded", amount)

    def frame_too_long(self) -> None:
        self.observer("frame_too_long", 1)

    def frame_timed_out(self) -> None:
        self.observer("frame_timeout", 1)

    def tls_failed(self) -> None:
        self.observer("tls_failed", 1)

    def in_flight_done(self) -> None:
        if self._drain_waiters and not any(p.busy for p in self.connections):
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> defer.Deferred:
        """A Deferred that fires once no connection has a frame in flight."""
        if not any(p.busy for p in self.connections):
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def close_all(self) -> None:
        """Close every connection (after drain)."""
        for proto in list(self.connections):
            proto.transport.loseConnection()


#: Pending connections the kernel queues for a listener whose endpoint string sets no backlog.
DEFAULT_BACKLOG = 1024


class MLLPListenerService(service.Service):
    """Listens on a Twisted endpoint string; on stop, stops listening, finishes in-flight frames, closes.

    Each connection passes ``Admission`` first (allowed networks, ``max_connections``), then TLS
    when ``tls`` is given, then reaches the MLLP protocol of ``factory``.
    """

    def __init__(
        self,
        name: str,
        reactor,
        endpoint: str,
        factory: MLLPServerFactory,
        *,
        shutdown_timeout: float = 30.0,
        tls: ssl.CertificateOptions | None = None,
        max_connections: int | None = None,
        allowed_networks: tuple[Network, ...] | None = None,
        backlog: int = DEFAULT_BACKLOG,
        reuse_port: bool = False,
    ):
        """``reuse_port``: bind with SO_REUSEPORT, sharing the port with other intake processes (tcp only)."""
        self.setName(name)
        self.reactor = reactor
        self.endpoint_description = with_backlog(endpoint, backlog)
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.factory = factory
        self.shutdown_timeout = shutdown_timeout
        self.front = Admission(
            factory if tls is None else with_tls(factory, tls),
            name=name,
            clock=reactor,
            connections=factory.connections,
            max_connections=max_connections,
            allowed_networks=allowed_networks,
            observer=factory.observer,
        )
        self._listening = None

    def startService(self) -> None:
        super().startService()
        if self.reuse_port:
            # Raises at once (a port bound without SO_REUSEPORT, a refused endpoint type): a start-up error.
            port = listen_reusing_port(
                self.reactor, self.endpoint_description, self.front, backlog=self.backlog
            )
            self._listening = defer.succeed(port)
            return
        listening = serverFromString(self.reactor, self.endpoint_description).listen(self.front)
        failures: list[Failure] = []
        listening.addErrback(failures.append)
        if failures:
            # A port that cannot be bound is a start-up error, not something to log and forget.
            failures[0].raiseException()
        self._listening = listening

    @property
    def bound(self) -> bool:
        """Whether the port is bound now (started, and not stopped since)."""
        return self._listening is not None and self._listening.called

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful with port 0)."""
        return self._listening.result.getHost().port

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._listening is not None:
            port = yield self._listening
            yield port.stopListening()
            self._listening = None
        drained = self.factory.drain()
        timeout = self.reactor.callLater(self.shutdown_timeout, _give_up, drained)
        yield drained
        if timeout.active():
            timeout.cancel()
        self.factory.close_all()


def _give_up(drained: defer.Deferred) -> None:
    if not drained.called:
        log.warn("shutdown timeout: closing mllp connections with frames still in flight")
        drained.callback(None)
