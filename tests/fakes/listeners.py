"""A frame handler for the listener tests, and a way to start listeners on loopback and read raw sockets."""

from __future__ import annotations

import socket

from twisted.internet import defer


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


class Events:
    """An MLLP factory's observer that keeps the count of each event."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, event: str, amount: int) -> None:
        self.counts[event] = self.counts.get(event, 0) + amount

    def __getitem__(self, event: str) -> int:
        return self.counts.get(event, 0)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Every byte the server sends until it closes (a reset counts as closed); bounded by ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
