"""The MLLP destination: one message at a time over a kept connection, on a thread of its own.

One connection is kept open between messages (or opened per message, with ``keep_alive: false``)
and reopened on the next send after a drop. Only one message is in flight: sends wait in a queue
and are served in order, each after the previous ACK (docs/hl7.md §1). Framing is
``engine.hl7.mllp``'s; what the ACK means is ``policy.decide``'s.

The connection is used by the destination's own thread, with blocking sockets. With one message
in flight, the time from an ACK to the next message bounds the rate. On the reactor that time is
a reactor turn, whatever else the turn carries (every intake connection, the channels' passes),
which under load is long. On its own thread it is the time to take the GIL back after the read,
far shorter (docs/performance.md has the measurements). The reactor thread only hands over sends
and receives results (``callFromThread``); no blocking I/O runs on it.
"""

from __future__ import annotations

import collections
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.destinations.base import Destination
from engine.channels.destinations.policy import decide, judge, read_ack, unexpected_failure, unexpected_result
from engine.channels.destinations.spec import MllpSettings, TlsSettings
from engine.channels.journal import NO_JOURNAL, Journal
from engine.hl7.mllp import FrameQueue, frame
from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["MLLPDestination", "client_tls_context"]

log = Logger()

_READ_BYTES = 65536


class _ReplyTooLong(Exception):
    """The reply frame grew past max_reply_bytes."""


class _ConnectionClosed(Exception):
    """The connection ended before the reply arrived."""


class _Connection:
    """One blocking connection (TCP or TLS) and the replies read from it; only the sending thread uses it."""

    def __init__(self, sock: socket.socket, max_reply_bytes: int):
        self.sock = sock
        self.replies = FrameQueue(max_reply_bytes)

    def arrived_while_idle(self) -> str | None:
        """What came while nothing was in flight.

        'closed' (the peer hung up), 'reply' (bytes nobody asked for), or None.
        """
        if self.replies.frames or self.replies.overflowed:
            return "reply"
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and not select.select([self.sock], [], [], 0)[0]:
            return None
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(_READ_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None  # TLS records without data (a TLS 1.3 session ticket)
        except OSError:
            return "closed"
        return "reply" if data else "closed"

    def request(self, payload: bytes, timeout: float) -> bytes | None:
        """Send one payload; its reply's payload, or None when none came within ``timeout``.

        Raises _ConnectionClosed (or OSError) when the connection ends, _ReplyTooLong past max_reply_bytes.
        """
        self.sock.settimeout(timeout)
        self.sock.sendall(frame(payload))
        deadline = time.monotonic() + timeout
        while not self.replies.frames:
            if self.replies.overflowed:
                raise _ReplyTooLong()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(_READ_BYTES)
            except TimeoutError:
                return None
            if not data:
                raise _ConnectionClosed("closed by the receiver")
            self.replies.dataReceived(data)
        return self.replies.frames.popleft()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # it is being thrown away
            pass


def client_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """The client side of TLS (destinations, `hl7engine send`): trusted CAs, our certificate, hostname check.

    TLS 1.2 at least.
    """
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    # Without the name check the chain is still verified against the trusted CAs.
    context.check_hostname = tls.verify_hostname
    return context


class MLLPDestination(Destination):
    """Sends each delivery over MLLP and maps the downstream ACK to an outcome.

    TLS material is read here, once, when the destination is built (at start-up). A sending
    thread starts with the first send and ends with ``stop()``.
    """

    #: Longer rounds than the other destinations: the run is sent on the destination's own thread
    #: with no reactor turn between messages, so that a queue that fell behind catches up (measured
    #: end to end at 8 connections: see docs/performance.md).
    round_size = 250
    #: ``stop()`` ends a run after the message in flight, as the dispatcher's own loop would.
    stop_before_pass = True

    def __init__(self, name: str, settings: MllpSettings, *, reactor):
        super().__init__(name)
        self.settings = settings
        self._reactor = reactor
        self._tls = client_tls_context(settings.tls) if settings.tls is not None else None
        self._sender: _Sender | None = None
        self._stopped = False

    def start(self) -> None:
        """Accept sends again; the thread and the connection start with the first one."""
        self._stopped = False

    def stop(self) -> defer.Deferred:
        """Let the message in flight finish, answer the others RETRY, close; fires when closed."""
        self._stopped = True
        sender, self._sender = self._sender, None
        return defer.succeed(None) if sender is None else sender.close()

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Fires with a DeliveryResult once this message (after those queued before it) is answered."""
        sent = self.send_run([delivery], stop_at_failure=False)
        return sent.addCallback(
            lambda results: (
                results[0]
                if results
                else DeliveryResult(Outcome.RETRY, reason="the destination stopped before sending")
            )
        )

    def send_run(
        self,
        deliveries: Sequence[Delivery],
        *,
        stop_at_failure: bool,
        stopped: Callable[[], bool] | None = None,
        journal: Journal = NO_JOURNAL,
    ) -> defer.Deferred:
        """Send the deliveries on the sending thread, each after the previous ACK.

        Fires with the results of those attempted. With ``stop_at_failure`` none is sent after the
        first that is not SENT. ``stop()`` ends a run after the message in flight (``stopped`` is not
        needed). So the results may be fewer than the deliveries: the rest were not attempted. The
        sending thread notes each delivery in ``journal`` before it goes and its answer after
        (``Destination.send_run``).
        """
        if self._stopped:
            return defer.succeed([])
        if self._sender is None:
            self._sender = _Sender(self.name, self.settings, self._tls, self._reactor)
        return self._sender.submit(list(deliveries), stop_at_failure, journal)


@dataclass(slots=True)
class _Run:
    """Sends waiting for the thread: deliveries sent in order, results handed back all at once."""

    deliveries: list[Delivery]
    stop_at_failure: bool
    journal: Journal
    done: defer.Deferred = field(default_factory=defer.Deferred)


class _Sender:
    """One sending thread, its queue of runs and its connection (used by that thread only)."""

    def __init__(self, name: str, settings: MllpSettings, tls: ssl.SSLContext | None, reactor):
        self.name = name
        self.settings = settings
        self._tls = tls
        self._reactor = reactor
        self._where = f"{name} ({settings.host}:{settings.port})"
        self._runs: collections.deque[_Run | defer.Deferred] = (
            collections.deque()
        )  # a Deferred: end, and fire it once closed
        self._wakeup = threading.Condition()
        self._closing = False  # once set, no attempt starts
        self._connection: _Connection | None = None
        threading.Thread(target=self._serve, name=f"hl7engine-mllp-{name}", daemon=True).start()

    def submit(self, deliveries: list[Delivery], stop_at_failure: bool, journal: Journal) -> defer.Deferred:
        """Queue a run; fires with its results (on the reactor thread)."""
        run = _Run(deliveries, stop_at_failure, journal)
        with self._wakeup:
            self._runs.append(run)
            self._wakeup.notify()
        return run.done

    def close(self) -> defer.Deferred:
        """Finish the attempt under way, attempt nothing more, close the connection; fires once closed."""
        closed = defer.Deferred()
        with self._wakeup:
            self._closing = True
            self._runs.append(closed)
            self._wakeup.notify()
        return closed

    # Everything below runs on the sending thread.

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not self._runs:
                    self._wakeup.wait()
                run = self._runs.popleft()
            if isinstance(run, defer.Deferred):
                self._drop()
                self._reactor.callFromThread(run.callback, None)
                return
            results: list[DeliveryResult] = []
            for delivery in run.deliveries:
                if self._closing:
                    break
                refused = run.journal.note_sending(delivery)
                if refused is not None:
                    results.append(refused)
                    break
                result = self._attempt_logged(delivery)
                run.journal.answered(delivery, result)
                results.append(result)
                if run.stop_at_failure and result.outcome != Outcome.SENT:
                    break
            run.journal.flush()
            self._reactor.callFromThread(run.done.callback, results)

    def _attempt_logged(self, delivery: Delivery) -> DeliveryResult:
        try:
            return self._attempt(delivery)
        except Exception:  # a bug: logged with its traceback (on the reactor thread), and the message is kept
            self._drop()
            failure = Failure()
            self._reactor.callFromThread(unexpected_failure, failure, self.name)
            return unexpected_result(failure)

    def _attempt(self, delivery: Delivery) -> DeliveryResult:
        settings = self.settings
        where = f"{settings.host}:{settings.port}"
        try:
            connection = self._connected()
        except TimeoutError:
            return DeliveryResult(
                Outcome.RETRY, reason=f"no connection to {where} within {settings.connect_timeout_seconds:g}s"
            )
        except OSError as exc:  # refused, unknown host, TLS handshake refused
            return DeliveryResult(Outcome.RETRY, reason=f"cannot connect to {where}: {exc}")
        try:
            reply = connection.request(delivery.payload, settings.ack_timeout_seconds)
        except (_ConnectionClosed, OSError) as exc:
            self._drop()
            return DeliveryResult(
                Outcome.RETRY, reason=f"the connection closed before the ACK arrived: {exc}"
            )
        except _ReplyTooLong:
            self._drop()
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id)
            return DeliveryResult(
                result.outcome,
                reason=f"the reply was longer than {settings.max_reply_bytes} bytes; connection dropped",
            )
        if reply is None:
            # A late ACK must not be taken for the next message: start afresh.
            self._drop()
            result = decide(settings.ack_policy, None, sent_control_id=delivery.control_id, timed_out=True)
            return DeliveryResult(
                result.outcome, reason=f"no ACK within {settings.ack_timeout_seconds:g}s; connection dropped"
            )
        ack = read_ack(reply) if reply else None
        if ack is None or ack.control_id != delivery.control_id:
            # A reply that does not answer this message (another control id, or no MSA): replies and
            # messages may be out of step, and the real ACK may still come, so start afresh.
            self._drop()
        elif not settings.keep_alive:
            self._drop()
        if ack is None:
            return decide(settings.ack_policy, reply, sent_control_id=delivery.control_id)
        return judge(settings.ack_policy, ack, sent_control_id=delivery.control_id)

    def _connected(self) -> _Connection:
        """The open connection, after checking nothing came while it was idle.

        A new one when there is none.
        """
        connection = self._connection
        if connection is not None:
            arrived = connection.arrived_while_idle()
            if arrived is None:
                return connection
            if arrived == "reply":
                self._log(
                    log.warn, "mllp destination {where}: a reply arrived with no message in flight; closing"
                )
            self._drop()
        settings = self.settings
        sock = socket.create_connection(
            (settings.host, settings.port), timeout=settings.connect_timeout_seconds
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=settings.host)
        except BaseException:
            sock.close()
            raise
        self._connection = _Connection(sock, settings.max_reply_bytes)
        self._log(log.info, "mllp destination {where}: connected")
        return self._connection

    def _drop(self) -> None:
        """Stop using the connection; the next send opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self._log(log.info, "mllp destination {where}: connection closed")

    def _log(self, emit, text: str) -> None:
        self._reactor.callFromThread(emit, text, where=self._where)
