"""SO_REUSEPORT listening: listen_reusing_port, and MLLPListenerService(reuse_port=True).

Several intake processes share a listener's port: the kernel spreads new connections over them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol

from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.listeners.endpoints import listen_reusing_port
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from tests.fakes.harness import free_port, in_thread
from tests.fakes.process import adt

# A process that listens on the port with SO_REUSEPORT and answers each connection with its pid.
_SERVER = """
import os, sys
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from engine.listeners.endpoints import listen_reusing_port

class Pid(Protocol):
    def connectionMade(self):
        self.transport.write(b"%d\\n" % os.getpid())
        self.transport.loseConnection()

listen_reusing_port(reactor, f"tcp:{sys.argv[1]}:interface=127.0.0.1", Factory.forProtocol(Pid), backlog=50)
print("listening", flush=True)
reactor.run()
"""


def _pid_of_acceptor(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        return int(connection.makefile("rb").readline())


def test_two_processes_on_one_port_both_accept_connections():
    """Two processes bound to one port with SO_REUSEPORT: new connections reach both."""
    port = free_port()
    servers = [
        subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], stdout=subprocess.PIPE) for _ in range(2)
    ]
    try:
        for server in servers:
            assert server.stdout.readline() == b"listening\n"
        expected = {server.pid for server in servers}
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        for _ in range(500):  # the kernel picks by a hash of the client's port: both come up soon
            seen.add(_pid_of_acceptor(port))
            if seen == expected or time.monotonic() > deadline:
                break
        assert seen == expected
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)


def test_a_port_bound_without_the_option_refuses_a_reusing_listener():
    """SO_REUSEPORT shares a port only with sockets that set it too: a plain listener keeps its port."""
    plain = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            listen_reusing_port(
                reactor,
                f"tcp:{plain.getsockname()[1]}:interface=127.0.0.1",
                Factory.forProtocol(Protocol),
                backlog=5,
            )
    finally:
        plain.close()


@pytest.mark.parametrize("endpoint", ["unix:/tmp/hl7engine-reuse.sock", "ssl:2575:privateKey=key.pem"])
def test_only_tcp_endpoints_can_share_a_port(endpoint):
    """unix: and ssl: endpoints are refused (TLS is the listener's tls: block, which works with sharing)."""
    with pytest.raises(ValueError, match="tcp: or tcp6:"):
        listen_reusing_port(reactor, endpoint, Factory.forProtocol(Protocol), backlog=5)


@pytest_twisted.inlineCallbacks
def test_two_mllp_listeners_share_a_port_in_one_process():
    """Two MLLPListenerServices with reuse_port on one port both start, and MLLP is answered through them."""
    port = free_port()

    class Answer:
        def handle(self, payload: bytes, peer: str):
            return defer.succeed(
                b"MSH|^~\\&|HUB|TEST|PMS|CLINIC|20260101120000||ACK^A04^ACK|A1|P|2.5.1\rMSA|AA|C000001\r"
            )

    services = [
        MLLPListenerService(
            f"main{i}",
            reactor,
            f"tcp:{port}:interface=127.0.0.1",
            MLLPServerFactory(Answer(), reactor=reactor, max_frame_bytes=1 << 20, idle_timeout=None),
            shutdown_timeout=1.0,
            reuse_port=True,
        )
        for i in range(2)
    ]
    for service in services:
        service.startService()
    try:
        assert [service.port for service in services] == [port, port]

        def request() -> str:
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                return parse_reply(client.request(adt(1))).code

        code = yield in_thread(request)
        assert code == "AA"
    finally:
        for service in services:
            yield service.stopService()
