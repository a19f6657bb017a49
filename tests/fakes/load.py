"""Senders for fault tests: a few connections sending unique messages, recording how each was answered."""

from __future__ import annotations

import threading
import time
from collections import Counter

import sqlalchemy as sa

from engine.listeners.client import MLLPClient
from engine.store.db import create_engine_for
from engine.store.schema import messages

# An ADT^A04 of about 1 KB (the NTE pads it, so that a small disk fills after a few thousand).
_MESSAGE = (
    "MSH|^~\\&|LOAD|TEST|HUB|TEST|20260101120000||ADT^A04|{control_id}|P|2.5.1\r"
    "PID|1||{control_id}^^^HOSP^MR||DOE^JANE||19800101|F\r"
    "NTE|1||{padding}\r"
)
_PADDING = "x" * 800
_REPLY_SECONDS = 5.0
_RECONNECT_SECONDS = 0.05


def acknowledgment(reply: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of a reply (empty without an MSA segment)."""
    for segment in reply.split(b"\r"):
        if segment.startswith(b"MSA|"):
            fields = segment.decode("ascii", errors="replace").split("|")
            return fields[1], fields[2] if len(fields) > 2 else ""
    return "", ""


class Senders:
    """``connections`` threads, each with one message in flight, until stop(); answers by control id.

    A message whose reply never came (the connection dropped, a timeout) is in no answer list: only
    what the engine answered counts. Each thread reconnects after an error.
    """

    def __init__(self, port: int, *, connections: int = 4, prefix: str = "L"):
        self._port = port
        self._prefix = prefix
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._answers: dict[str, str] = {}  # control id -> MSA-1
        self._last: dict[str, float] = {}  # MSA-1 -> time.monotonic() of the last such answer
        self.errors = 0  # connections lost, replies that never came
        self.mismatches = 0  # replies to another message than the one sent
        self._threads = [
            threading.Thread(target=self._send_until_stopped, args=(n,), daemon=True)
            for n in range(connections)
        ]

    def start(self) -> Senders:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop every sender once its message in flight is answered (a reply timeout at most)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=_REPLY_SECONDS + 1)
            assert not thread.is_alive(), "a sender did not stop"

    def acknowledged(self, code: str = "AA") -> set[str]:
        """The control ids answered ``code``."""
        with self._lock:
            return {control_id for control_id, answer in self._answers.items() if answer == code}

    def counts(self) -> Counter:
        """How many messages got each answer."""
        with self._lock:
            return Counter(self._answers.values())

    def answered_since(self, code: str, moment: float) -> bool:
        """Whether some message was answered ``code`` after ``moment`` (time.monotonic())."""
        with self._lock:
            return self._last.get(code, float("-inf")) > moment

    def wait_for(self, code: str, *, after: float, seconds: float) -> bool:
        """Wait (bounded) until some message is answered ``code`` after ``after``; whether one was."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.answered_since(code, after):
                return True
            time.sleep(0.02)
        return False

    def _send_until_stopped(self, number: int) -> None:
        sent = 0
        while not self._stopping.is_set():
            try:
                with MLLPClient("127.0.0.1", self._port, timeout=_REPLY_SECONDS) as client:
                    while not self._stopping.is_set():
                        sent += 1
                        control_id = f"{self._prefix}{number}-{sent}"
                        payload = _MESSAGE.format(control_id=control_id, padding=_PADDING).encode()
                        code, answered_id = acknowledgment(client.request(payload))
                        self._answered(control_id, code, answered_id)
            except Exception:  # a dropped connection or a reply timeout: reconnect
                with self._lock:
                    self.errors += 1
                self._stopping.wait(_RECONNECT_SECONDS)

    def _answered(self, control_id: str, code: str, answered_id: str) -> None:
        with self._lock:
            if answered_id != control_id:
                self.mismatches += 1
                return
            self._answers[control_id] = code
            self._last[code] = time.monotonic()


def stored_control_ids(url: str, control_ids: set[str]) -> set[str]:
    """Which of ``control_ids`` the store at ``url`` holds a message of."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            stored = set(connection.scalars(sa.select(messages.c.control_id)))
    finally:
        engine.dispose()
    return stored & control_ids
