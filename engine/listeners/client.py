"""A blocking MLLP client for the command line, tests and the benchmark.

It collects frames as the server does (``engine.hl7.mllp``), so both ends agree on what a frame
is. Every reply is matched to the message it answers by MSA-2 (an ACK for another message is an
error, not a success).
"""

from __future__ import annotations

import re
import socket
import ssl
import time

from engine.hl7.mllp import FrameQueue, frame


class ReplyTimeout(Exception):
    """No complete reply arrived in time."""


class MLLPClient:
    """One connection to an MLLP receiver (TLS with ``tls``); send a payload, wait for the framed reply."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ):
        self.timeout = timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = sock if tls is None else tls.wrap_socket(sock, server_hostname=host)
        except OSError:  # the handshake failed: do not leak the socket
            sock.close()
            raise
        self._replies = FrameQueue(max_frame_bytes)

    def send(self, payload: bytes) -> None:
        """Write one framed payload."""
        self.sock.sendall(frame(payload))

    def receive(self, timeout: float | None = None) -> bytes:
        """The next framed reply's payload; raises ReplyTimeout when none arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frames = self._replies.frames
        while not frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(f"no reply within {self.timeout if timeout is None else timeout:g}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("connection closed by the receiver before a reply arrived")
            self._replies.dataReceived(data)
        return frames.popleft()

    def request(self, payload: bytes, timeout: float | None = None) -> bytes:
        """Send one payload and return the reply's payload."""
        self.send(payload)
        return self.receive(timeout)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def __enter__(self) -> MLLPClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def split_messages(data: bytes, *, keep_batch_envelope: bool = False) -> list[bytes]:
    """Split a file's bytes into messages: LF, CRLF or CR between segments, a new message at each MSH.

    Batch envelope segments (FHS, BHS, BTS, FTS) are dropped unless ``keep_batch_envelope``, in
    which case the whole file is one payload. Segments are re-joined with CR as MLLP expects.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    segments = [s for s in re.split(rb"\r\n|\n|\r", data) if s.strip()]
    if keep_batch_envelope:
        return [b"\r".join(segments) + b"\r"] if segments else []
    messages: list[list[bytes]] = []
    for segment in segments:
        if segment[:3] in (b"FHS", b"BHS", b"BTS", b"FTS"):
            continue
        if segment.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"\r".join(m) + b"\r" for m in messages]


def control_id_of(payload: bytes) -> str:
    """MSH-10 of a payload, read the cheap way (for matching replies)."""
    first = re.split(rb"\r\n|\n|\r", payload, maxsplit=1)[0].decode("utf-8", errors="replace")
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    return fields[9] if len(fields) > 9 else ""
