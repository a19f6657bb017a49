"""The MLLP server protocol and its service: frames in, answers out, in order."""

from __future__ import annotations

import socket
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from engine.hl7.mllp import START_BLOCK, frame
from engine.listeners.client import MLLPClient
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory

MSG_A = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||123\r"
MSG_B = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|2|P|2.5\rOBX|1|NM|x||5\r"
MSG_C = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|3|P|2.5\r"


class EchoHandler:
    """Answers each frame with 'ACK ' + its payload; can hold answers back to test ordering."""

    def __init__(self):
        self.seen: list[bytes] = []
        self.held: list[defer.Deferred] | None = None

    def handle(self, payload: bytes, peer: str):
        self.seen.append(payload)
        if self.held is not None:
            d = defer.Deferred()
            d.addCallback(lambda _: b"ACK " + payload)
            self.held.append(d)
            return d
        return defer.succeed(b"ACK " + payload)

    def internal_error(self, payload: bytes, reason: str) -> bytes:
        return b"NAK internal " + reason.encode()

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes:
        return b"NAK too long %d" % limit


def connect(handler, clock=None, max_frame_bytes=1024, idle_timeout=None):
    factory = MLLPServerFactory(
        handler, reactor=clock or Clock(), max_frame_bytes=max_frame_bytes, idle_timeout=idle_timeout
    )
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, factory


def test_answers_are_written_in_order_even_when_handling_finishes_out_of_order():
    """One connection's frames are handled one at a time and answered in the order received."""
    handler = EchoHandler()
    handler.held = []
    proto, transport, _ = connect(handler)
    proto.dataReceived(frame(MSG_A) + frame(MSG_B) + frame(MSG_C))
    assert handler.seen == [MSG_A]  # the second frame waits for the first answer
    handler.held[0].callback(None)
    assert handler.seen == [MSG_A, MSG_B]
    handler.held[1].callback(None)
    handler.held[2].callback(None)
    assert transport.value() == frame(b"ACK " + MSG_A) + frame(b"ACK " + MSG_B) + frame(b"ACK " + MSG_C)


def test_a_failing_handler_still_answers_and_the_connection_goes_on():
    """An unexpected handler error is answered (AR 207 from the handler) and the next frame is served."""

    class Failing(EchoHandler):
        def handle(self, payload, peer):
            if payload == MSG_A:
                raise RuntimeError("boom")
            return super().handle(payload, peer)

    proto, transport, _ = connect(Failing())
    proto.dataReceived(frame(MSG_A) + frame(MSG_B))
    assert transport.value() == frame(b"NAK internal boom") + frame(b"ACK " + MSG_B)
    assert not transport.disconnecting


def test_a_failure_inside_the_answer_to_a_failure_closes_the_connection_and_frees_it():
    """When even the internal-error answer fails, the connection is closed, never left busy."""

    class Broken(EchoHandler):
        def handle(self, payload, peer):
            return defer.fail(RuntimeError("boom"))

        def internal_error(self, payload, reason):
            raise IndexError("the answer failed too")

    proto, transport, factory = connect(Broken())
    proto.dataReceived(frame(MSG_A) + frame(MSG_B))
    assert transport.value() == b""
    assert transport.disconnecting
    assert not proto.busy and factory.in_flight == 0
    assert factory.drain().called  # a stop does not wait for it


def test_oversize_frame_is_answered_after_earlier_frames_then_closed():
    """Frames before the oversize one are answered first, then the NAK, then the connection closes."""
    proto, transport, _ = connect(EchoHandler(), max_frame_bytes=200)
    proto.dataReceived(frame(MSG_A) + START_BLOCK + b"x" * 500)
    assert transport.value() == frame(b"ACK " + MSG_A) + frame(b"NAK too long 200")
    assert transport.disconnecting


def test_idle_connection_times_out():
    """A connection with no traffic for idle_timeout seconds is closed."""
    clock = Clock()
    proto, transport, _ = connect(EchoHandler(), clock=clock, idle_timeout=10)
    clock.advance(9)
    proto.dataReceived(frame(MSG_A))
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_no_idle_timeout_while_a_message_is_in_flight():
    """A slow store does not make the connection time out under the sender's feet."""
    clock = Clock()
    handler = EchoHandler()
    handler.held = []
    proto, transport, _ = connect(handler, clock=clock, idle_timeout=5)
    proto.dataReceived(frame(MSG_A))
    clock.advance(60)
    assert not transport.disconnecting
    handler.held[0].callback(None)
    assert transport.value() == frame(b"ACK " + MSG_A)


def test_pipelining_sender_is_paused_then_resumed():
    """A sender that pipelines past max_queued frames is paused, and resumed once the queue drains."""
    handler = EchoHandler()
    handler.held = []
    proto, transport, _ = connect(handler)
    proto.dataReceived(frame(MSG_A) * (proto.max_queued + 1))
    assert transport.producerState == "paused"
    while handler.held:
        pending = list(handler.held)
        handler.held.clear()
        for d in pending:
            d.callback(None)
    assert transport.producerState == "producing"
    assert transport.value().count(b"ACK ") == proto.max_queued + 1


@pytest_twisted.inlineCallbacks
def test_many_concurrent_connections_over_loopback():
    """Forty real loopback connections interleave messages and each gets its own answers, in order."""
    handler = EchoHandler()
    factory = MLLPServerFactory(handler, reactor=reactor, max_frame_bytes=1 << 20, idle_timeout=30)
    listener = MLLPListenerService("test", reactor, "tcp:0:interface=127.0.0.1", factory)
    listener.startService()
    port = listener.port
    barrier = threading.Barrier(40)

    def one_sender(n: int) -> list[bytes]:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            barrier.wait(timeout=10)
            answers = []
            for i in range(20):
                payload = b"MSH|^~\\&|conn%d|msg%d\r" % (n, i)
                answers.append(client.request(payload))
            return answers

    try:
        pool = reactor.getThreadPool()
        pool.adjustPoolsize(maxthreads=50)
        results = yield defer.gatherResults(
            [threads.deferToThread(one_sender, n) for n in range(40)], consumeErrors=True
        )
    finally:
        yield listener.stopService()
    for n, answers in enumerate(results):
        assert answers == [b"ACK MSH|^~\\&|conn%d|msg%d\r" % (n, i) for i in range(20)]
    assert len(handler.seen) == 800


@pytest_twisted.inlineCallbacks
def test_stop_finishes_in_flight_messages_before_closing():
    """A graceful stop stops listening, lets the message in flight be answered, then closes."""
    handler = EchoHandler()
    handler.held = []
    factory = MLLPServerFactory(handler, reactor=reactor, max_frame_bytes=1 << 20, idle_timeout=30)
    listener = MLLPListenerService("test", reactor, "tcp:0:interface=127.0.0.1", factory)
    listener.startService()
    port = listener.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(frame(MSG_A))
    while not handler.held:
        yield deferLater(0.01)
    stopping = listener.stopService()
    yield deferLater(0.05)
    assert not stopping.called
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    handler.held[0].callback(None)
    yield stopping
    received = yield threads.deferToThread(_read_all, sock)
    assert received == frame(b"ACK " + MSG_A)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


def test_idle_connections_counts_open_connections_with_nothing_in_flight():
    """What the store's group commit waits for: connected senders that may send any moment."""
    handler = EchoHandler()
    handler.held = []
    first, _, factory = connect(handler)
    second = factory.buildProtocol(None)
    second.makeConnection(StringTransport())
    assert factory.idle_connections == 2
    first.dataReceived(frame(MSG_A))
    assert factory.idle_connections == 1
    handler.held[0].callback(None)
    assert factory.idle_connections == 2
    second.dataReceived(frame(MSG_B))
    second.connectionLost()
    assert factory.idle_connections == 0  # closed while in flight: neither idle nor counted twice
    handler.held[1].callback(None)
    assert factory.idle_connections == 1
