"""Senders that fail over between nodes: a connection each, one message in flight, resending the unacked.

Each sender starts on one node of a list (dealt out round-robin) and moves to the next when its
connection breaks or is refused (its node was killed), sending again the message it had no ACK
for, as a real HL7 sender does. Used by ``bench/cluster.py`` (the failover test and benchmark).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

from bench.loadgen import check_ack
from bench.messages import Template, generate

VT, FS_CR = b"\x0b", b"\x1c\x0d"
_TEMPLATES = 64


@dataclass
class SenderTally:
    """What all senders saw."""

    acknowledged: dict[str, float] = field(default_factory=dict)  # control id -> monotonic time of its ACK
    failovers: int = 0  # connections that broke or could not be made, and were moved to the next node
    resent: int = 0  # messages sent again on another connection after their first had no answer
    refused: int = 0  # negative answers (AR/AE ...), sent again after a pause
    problems: list[str] = field(default_factory=list)  # messages given up on, with why


class Senders:
    """``connections`` threads, each sending ``per_connection`` messages with one in flight, failing over.

    Connection ``i`` starts on ``ports[i % len(ports)]`` and moves to the next port in the list when
    its connection breaks or is refused; the message without an ACK goes again on the new one.
    """

    def __init__(
        self,
        ports: list[int],
        connections: int,
        per_connection: int,
        *,
        tag: str = "FO",
        reply_timeout: float = 15.0,
        give_up_after: int = 30,
        pace_seconds: float = 0.0,
    ):
        self.ports = ports
        self.per_connection = per_connection
        self.tally = SenderTally()
        self._lock = threading.Lock()
        self._reply_timeout = reply_timeout
        self._give_up_after = give_up_after
        self._pace = pace_seconds
        self._templates = generate(_TEMPLATES, seed=2575)
        self._threads = [
            threading.Thread(target=self._run, args=(index, f"{tag}C{index:02d}"), daemon=True)
            for index in range(connections)
        ]

    @property
    def total(self) -> int:
        return len(self._threads) * self.per_connection

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def acknowledged(self) -> int:
        """How many messages were acknowledged so far."""
        with self._lock:
            return len(self.tally.acknowledged)

    def join(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for every sender to finish; whether they all did."""
        deadline = time.monotonic() + seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self, index: int, prefix: str) -> None:
        order = self.ports[index % len(self.ports) :] + self.ports[: index % len(self.ports)]
        link = _Link(order, self._reply_timeout)
        try:
            for sequence in range(self.per_connection):
                template: Template = self._templates[(index * 7 + sequence) % len(self._templates)]
                control_id = b"%s%06d" % (prefix.encode(), sequence)
                payload = b"".join((VT, template.head, control_id, template.tail, FS_CR))
                self._deliver(link, control_id, payload)
                if self._pace:
                    time.sleep(self._pace)
        finally:
            link.close()

    def _deliver(self, link: _Link, control_id: bytes, payload: bytes) -> None:
        """Send one message until a node acknowledges it (or give up after a bounded number of tries)."""
        for attempt in range(self._give_up_after):
            if attempt:
                with self._lock:
                    self.tally.resent += 1
            try:
                reply = link.exchange(payload)
            except OSError:
                with self._lock:
                    self.tally.failovers += 1
                link.fail_over()
                continue
            problem = check_ack(reply, control_id)
            if problem is None:
                with self._lock:
                    self.tally.acknowledged[control_id.decode()] = time.monotonic()
                return
            with self._lock:
                self.tally.refused += 1
            time.sleep(0.2)
        with self._lock:
            self.tally.problems.append(f"{control_id.decode()}: no ACK after {self._give_up_after} tries")


class _Link:
    """One sender's connection to the current node of its list; ``fail_over`` moves to the next."""

    def __init__(self, ports: list[int], reply_timeout: float):
        self._ports = ports
        self._current = 0
        self._timeout = reply_timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def exchange(self, payload: bytes) -> bytes:
        """Send a framed message, return the reply's payload; OSError when the connection fails."""
        if self._sock is None:
            self._sock = socket.create_connection(
                ("127.0.0.1", self._ports[self._current]), timeout=self._timeout
            )
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(payload)
        while True:
            end = self._buffer.find(FS_CR)
            if end >= 0:
                start = self._buffer.find(VT, 0, end)
                reply = self._buffer[start + 1 if start >= 0 else 0 : end]
                self._buffer = self._buffer[end + 2 :]
                return reply
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionResetError("the node closed the connection")
            self._buffer += data

    def fail_over(self) -> None:
        """Drop the connection and use the next node; a short pause so a refused port is not hammered."""
        self.close()
        self._current = (self._current + 1) % len(self._ports)
        time.sleep(0.05 + random.random() * 0.05)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""
