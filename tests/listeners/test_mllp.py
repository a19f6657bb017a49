"""The MLLP server protocol and its service: frames in, answers out, in order."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, tcp, threads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from engine.hl7.mllp import START_BLOCK, frame
from engine.listeners.client import MLLPClient
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from tests.fakes.harness import in_thread
from tests.fakes.listeners import EchoHandler, Events, read_until_closed

MSG_A = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\rPID|1||123\r"
MSG_B = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|2|P|2.5\rOBX|1|NM|x||5\r"
MSG_C = b"MSH|^~\\&|A|B|C|D|20260101||SIU^S12|3|P|2.5\r"


def connect(handler, clock=None, max_frame_bytes=1024, idle_timeout=None, frame_timeout=None, observer=None):
    factory = MLLPServerFactory(
        handler,
        reactor=clock or Clock(),
        max_frame_bytes=max_frame_bytes,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        observer=observer,
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


def test_a_frame_trickled_byte_by_byte_is_closed_at_the_frame_timeout():
    """Each byte inside a frame keeps the connection from idling, but the frame as a whole must end
    within frame_timeout of its start byte; then the connection is closed unanswered and counted."""
    clock, events = Clock(), Events()
    proto, transport, _ = connect(
        EchoHandler(), clock=clock, idle_timeout=3, frame_timeout=10, observer=events
    )
    proto.dataReceived(START_BLOCK)
    for byte in MSG_A[:9]:
        clock.advance(1)
        proto.dataReceived(bytes([byte]))
    assert not transport.disconnecting  # 9 s into the frame; the 3 s idle timeout did not fire
    clock.advance(1)
    assert transport.disconnecting
    assert transport.value() == b""
    assert events["frame_timeout"] == 1


def test_the_frame_timeout_counts_from_each_frames_start():
    """Frames that arrive whole in time never time out, however long the connection lives; the next
    frame's clock starts at its own start byte."""
    clock, events = Clock(), Events()
    proto, transport, _ = connect(EchoHandler(), clock=clock, frame_timeout=10, observer=events)
    for _ in range(5):  # 40 s of frames, each 2 s long
        proto.dataReceived(START_BLOCK + MSG_A[:10])
        clock.advance(2)
        proto.dataReceived(MSG_A[10:] + b"\x1c\r")
        clock.advance(6)
    proto.dataReceived(START_BLOCK + MSG_B[:10])  # starts at 40 s
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert transport.value() == frame(b"ACK " + MSG_A) * 5
    assert events["frame_timeout"] == 1


def test_bytes_outside_frames_do_not_keep_a_connection_open():
    """A sender trickling noise (no start byte) is idle: closed after idle_timeout, the noise counted."""
    clock, events = Clock(), Events()
    proto, transport, _ = connect(
        EchoHandler(), clock=clock, idle_timeout=10, frame_timeout=5, observer=events
    )
    for _ in range(9):
        clock.advance(1)
        proto.dataReceived(b"noise")
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert events["bytes_discarded"] == 45
    assert events["frame_timeout"] == 0


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


def trickle(port: int, payload: bytes, pause: float, limit: float) -> tuple[float, bytes]:
    """Send VT + payload one byte per ``pause`` seconds until the server closes (at most ``limit`` s);
    how long the connection lasted, and what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        try:
            sock.sendall(START_BLOCK)
            for byte in payload:
                if time.monotonic() - started > limit:
                    break
                time.sleep(pause)
                sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock, timeout=limit)
        return time.monotonic() - started, answer


@pytest_twisted.inlineCallbacks
def test_a_slow_sender_over_loopback_is_closed_at_the_frame_timeout(listen):
    """Real sockets: a sender trickling a frame a byte every 50 ms is closed about 0.5 s after its
    start byte (each byte would have reset an idle timer forever); a frame sent whole is served."""
    listener = listen(frame_timeout=0.5, idle_timeout=30)
    lasted, answer = yield in_thread(trickle, listener.port, MSG_A * 10, 0.05, 5.0)
    assert 0.5 <= lasted < 3.0
    assert answer == b""
    assert listener.events["frame_timeout"] == 1
    with MLLPClient("127.0.0.1", listener.port, timeout=5) as client:
        assert (yield in_thread(client.request, MSG_A)) == b"ACK " + MSG_A
    assert listener.handler.seen == [MSG_A]


def connect_crowd(port: int, count: int, within: float) -> tuple[list[socket.socket], int]:
    """Start ``count`` non-blocking connects at once: the sockets, and how many connect within ``within``."""
    crowd = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        crowd.append(sock)
    poller = select.poll()
    for sock in crowd:
        poller.register(sock, select.POLLOUT)
    connected: set[int] = set()
    deadline = time.monotonic() + within
    while len(connected) < count and (remaining := deadline - time.monotonic()) > 0:
        for fd, _event in poller.poll(remaining * 1000):
            poller.unregister(fd)
            connected.add(fd)
    done = sum(
        1 for s in crowd if s.fileno() in connected and not s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    )
    return crowd, done


def answer_crowd(crowd: list[socket.socket]) -> list[bytes]:
    """Send one frame on every socket of the crowd, then read each one's answer."""
    for sock in crowd:
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(frame(MSG_A))
    answers = []
    for sock in crowd:
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        answers.append(data)
    return answers


@pytest.mark.parametrize(("backlog", "all_connect"), [(50, False), (1024, True)])
@pytest_twisted.inlineCallbacks
def test_a_crowd_connecting_at_once_waits_in_the_listen_backlog(listen, backlog, all_connect):
    """400 senders connect while the engine is too busy to accept (its reactor thread runs this test):
    with the default backlog of 1024 the kernel completes every handshake at once, where Twisted's 50
    leaves most waiting for a retransmitted SYN (1 s, then 3 s ...). Then every sender is answered."""
    listener = listen(backlog=backlog)
    crowd, connected = connect_crowd(listener.port, 400, within=0.5)
    try:
        assert (connected == 400) is all_connect
        if all_connect:
            answers = yield in_thread(answer_crowd, crowd)
            assert answers == [frame(b"ACK " + MSG_A)] * 400
    finally:
        for sock in crowd:
            sock.close()


def test_a_reply_the_socket_takes_only_in_part_keeps_later_replies_behind_it():
    """A reply sent straight to the socket that takes only part of it: the rest, and every later
    reply, go through the transport, so a small reply never overtakes a large one's tail."""
    server, peer = socket.socketpair()
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    handler = EchoHandler()
    handler.held = []
    factory = MLLPServerFactory(handler, reactor=reactor, max_frame_bytes=4 << 20, idle_timeout=None)
    proto = factory.buildProtocol(None)
    transport = tcp.Connection(server, proto, reactor)
    transport.connected = True  # as a connection accepted by a port is
    proto.makeConnection(transport)
    large = b"MSH|^~\\&|big|" + b"x" * (1 << 20) + b"\r"
    try:
        proto.dataReceived(frame(large) + frame(MSG_A))
        handler.held[0].callback(None)  # the socket takes part of it: the rest waits in the transport
        peer.settimeout(5)
        received = peer.recv(1 << 16)  # room in the socket again, the transport still holding the tail
        handler.held[1].callback(None)
        peer.setblocking(False)
        expected = frame(b"ACK " + large) + frame(b"ACK " + MSG_A)
        for _ in range(10_000):  # the reactor does not run here: the transport is flushed by hand
            if len(received) >= len(expected):
                break
            transport.doWrite()
            try:
                received += peer.recv(1 << 20)
            except BlockingIOError:
                pass
        assert received == expected
    finally:
        reactor.removeReader(transport)
        reactor.removeWriter(transport)
        server.close()
        peer.close()
