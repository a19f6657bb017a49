"""Who may connect: peers of allowed_networks, up to max_connections; the others are closed unread."""

from __future__ import annotations

import socket
from ipaddress import ip_network

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from engine.hl7.mllp import frame
from engine.listeners.admission import Admission, peer_allowed
from engine.listeners.admission import log as admission_log
from engine.listeners.client import MLLPClient
from tests.fakes.harness import in_thread, wait_until
from tests.fakes.listeners import Events, read_until_closed

MSG = b"MSH|^~\\&|PMS|NORTH|HUB|TEST|20260101120000||ADT^A04|A1|P|2.5.1\r"
LAN = (ip_network("10.0.0.0/8"), ip_network("192.168.1.7/32"), ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("10.1.2.3", True),
        ("192.168.1.7", True),
        ("192.168.1.8", False),
        ("127.0.0.1", False),
        ("::ffff:10.9.9.9", True),  # an IPv4 client of a dual-stack socket
        ("::ffff:127.0.0.1", False),
        ("fd12::1", True),
        ("fe80::1%eth0", False),
        (None, False),  # a UNIX socket peer has no address
        ("not-an-address", False),
    ],
)
def test_a_peer_is_allowed_when_its_address_lies_in_a_network(host, allowed):
    """IPv4, IPv6, IPv4-mapped IPv6 and scoped addresses; no address is never allowed."""
    assert peer_allowed(host, LAN) is allowed


def exchange(port: int) -> bytes:
    with MLLPClient("127.0.0.1", port, timeout=5) as client:
        return client.request(MSG)


def refused(port: int) -> bytes:
    """What a refused peer gets: the connection closed before any answer (with its frame unread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(frame(MSG))
        except (BrokenPipeError, ConnectionResetError):
            pass  # already closed: as it should be
        return read_until_closed(sock)


@pytest_twisted.inlineCallbacks
def test_a_peer_outside_allowed_networks_is_closed_unread_and_counted(listen):
    """127.0.0.1 against an allowlist of other networks: closed at once, no frame handled, counted."""
    listener = listen(allowed_networks=LAN)
    assert (yield in_thread(refused, listener.port)) == b""
    assert listener.handler.seen == []
    assert listener.events["connection_not_allowed"] == 1
    assert listener.events["connection_opened"] == 0


@pytest_twisted.inlineCallbacks
def test_a_peer_inside_allowed_networks_is_served(listen):
    """127.0.0.0/8 in the allowlist: the loopback sender is answered."""
    listener = listen(allowed_networks=(ip_network("10.0.0.0/8"), ip_network("127.0.0.0/8")))
    assert (yield in_thread(exchange, listener.port)) == b"ACK " + MSG
    assert listener.events["connection_not_allowed"] == 0


@pytest_twisted.inlineCallbacks
def test_max_connections_closes_the_connection_over_the_limit_and_admits_again_below_it(listen):
    """With three open, a fourth is closed unread and counted; once one closes, a new one is served."""
    listener = listen(max_connections=3)
    clients = [MLLPClient("127.0.0.1", listener.port, timeout=5) for _ in range(3)]
    try:
        for client in clients:  # each answered: each holds a connection on the server
            assert (yield in_thread(client.request, MSG)) == b"ACK " + MSG
        assert listener.open_connections == 3
        assert (yield in_thread(refused, listener.port)) == b""
        assert listener.events["connection_over_limit"] == 1
        clients.pop().close()
        yield wait_until(lambda: listener.open_connections == 2, seconds=5)
        assert (yield in_thread(exchange, listener.port)) == b"ACK " + MSG
    finally:
        for client in clients:
            client.close()
    assert listener.events["connection_over_limit"] == 1
    assert len(listener.handler.seen) == 4


def test_refusals_are_all_counted_but_logged_at_most_once_per_interval():
    """A flood of refused connections: each is counted; one log line per reason and interval says how
    many the log left out, and names the peer's address (never more)."""
    clock, events = Clock(), Events()
    admission = Admission(
        EchoFactory(),
        name="pms",
        clock=clock,
        connections=[],
        allowed_networks=LAN,
        observer=events,
    )
    with capturedLogs() as logged:
        for _ in range(5):
            assert admission.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000)) is None
        clock.advance(admission.log_interval)
        assert admission.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40001)) is None
        assert admission.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40002)) is not None
    lines = [formatEvent(event) for event in logged if event.get("log_namespace") == admission_log.namespace]
    assert lines == [
        "listener pms: connection from 127.0.0.1 refused: not in allowed_networks"
        " (0 more refused since the last such line)",
        "listener pms: connection from 127.0.0.2 refused: not in allowed_networks"
        " (4 more refused since the last such line)",
    ]
    assert events["connection_not_allowed"] == 6


class EchoFactory(protocol.Factory):
    """Builds a plain Protocol for every admitted peer."""

    protocol = protocol.Protocol
