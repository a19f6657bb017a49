"""Who may connect to a listener: peers of the allowed networks, while the listener has room.

``Admission`` is the outermost factory of a listening port. It decides on the peer's address alone,
before any protocol, TLS handshake or buffer exists: a refused connection is closed by Twisted at
once (``buildProtocol`` returning None), logged with the peer's address (an address, not patient
data) and counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sized
from ipaddress import IPv4Network, IPv6Network

from twisted.internet import protocol
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger

from engine.lograte import LogRate

__all__ = ["Admission", "Network", "peer_allowed"]

log = Logger()

Network = IPv4Network | IPv6Network


def peer_allowed(host: str | None, networks: tuple[Network, ...]) -> bool:
    """True when ``host`` (an IP address) lies in one of ``networks``.

    An IPv4 client of a dual-stack IPv6 socket arrives as ``::ffff:a.b.c.d``; it is judged by its
    IPv4 address, so one list serves both kinds of socket. A peer without an IP address (a UNIX
    socket) is never in a network.
    """
    try:
        address = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class Admission(protocol.Factory):
    """Builds ``inner``'s protocol for an admitted peer; refuses (returns None) the others.

    ``connections`` is the live collection of the listener's open connections (those mid-handshake
    included), so the limit counts what actually holds a socket. Every refusal is counted; the log
    says at most one line per reason and ``log_interval`` seconds (with how many it did not
    mention), so a flood of refused connections cannot flood the log.
    """

    noisy = False
    log_interval = 10.0

    def __init__(
        self,
        inner: IProtocolFactory,
        *,
        name: str,
        clock,
        connections: Sized,
        max_connections: int | None = None,
        allowed_networks: tuple[Network, ...] | None = None,
        observer: Callable[[str, int], None] | None = None,
    ):
        self.inner = inner
        self.name = name
        self.clock = clock
        self.connections = connections
        self.max_connections = max_connections
        self.allowed_networks = allowed_networks
        self._observer = observer or (lambda event, amount: None)
        self._lines = LogRate(self.log_interval, clock.seconds)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if self.allowed_networks is not None and not peer_allowed(host, self.allowed_networks):
            self._refuse("connection_not_allowed", host, "not in allowed_networks")
            return None
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self._refuse("connection_over_limit", host, f"{self.max_connections} connections open")
            return None
        return self.inner.buildProtocol(addr)

    def _refuse(self, event: str, host: str | None, why: str) -> None:
        self._observer(event, 1)
        if (refusals := self._lines.due(event)) is None:
            return
        log.warn(
            "listener {listener}: connection from {peer} refused: {why}"
            " ({unlogged} more refused since the last such line)",
            listener=self.name,
            peer=host,
            why=why,
            unlogged=refusals - 1,
        )

    def startFactory(self) -> None:
        self.inner.doStart()

    def stopFactory(self) -> None:
        self.inner.doStop()
