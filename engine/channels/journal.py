"""A destination queue's journal: what went out and what came back, written before the next send.

A dispatcher records its attempts in the store once per round (one write for up to 250), so
without more a crash in the middle of a round would lose the answers of the messages already
sent, and they would all go again. The journal closes that gap for an append per message:
before a delivery can reach the partner its line ``S`` is written, and once its answer is in,
its line ``A`` (kept back and written with the next ``S``, or at the end of the run: one write per
message). Once the round is recorded in the store, the journal is emptied. After a crash, what
it still holds says which answers to record and which one delivery was in flight: the only one
that may reach the partner twice.

The file is mapped into memory (shared), so a line is written by copying it into the map: it is
then in the OS page cache, which a kill of the engine does not lose, without a system call. That
matters on the mllp destination's sending thread: a system call lets go of the GIL, and under
load taking it back costs up to the interpreter's switch interval, on every message. With
``sync`` (``durability: power_loss``) each write is followed by an msync, so a power loss does not
lose it either; that call runs on a thread of the reactor's pool when the sender is the reactor.
Past its last line the file holds zeros: the journal is emptied by zeroing what it held.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["NO_JOURNAL", "DeliveryJournal", "Journal", "Journals", "Unrecorded"]

#: The size the journal file is made (sparse) and mapped; it grows when a round needs more.
CAPACITY = 1 << 20
# File systems take names of 255 bytes; longer (quoted) queue names are hashed.
_LONGEST_NAME = 200


class Journal(Protocol):
    """What a destination's ``send_run`` notes into: a queue's DeliveryJournal, or NO_JOURNAL."""

    def note_sending(self, delivery: Delivery) -> DeliveryResult | None:
        """Note that ``delivery`` goes now: None once noted, else a RETRY result (it must not go)."""

    def answered(self, delivery: Delivery, result: DeliveryResult) -> None:
        """Note the answer to ``delivery`` (written with the next note, or ``flush``)."""

    def flush(self) -> None:
        """Write the answers held back (the end of a run)."""

    def from_reactor(self, method: Callable, *args) -> defer.Deferred:
        """Call ``note_sending`` or ``flush`` from the reactor thread."""


@dataclass(frozen=True, slots=True)
class Unrecorded:
    """A journalled attempt the store does not have yet: its answer, or None when it was in flight."""

    # Only what the journal keeps: ids, attempt number and queue time (no payload, no control id).
    delivery: Delivery
    result: DeliveryResult | None


class DeliveryJournal:
    """The journal of one destination queue: a file of JSON lines, emptied once a round is recorded.

    The sending side (one thread at a time: the destination's own, or the reactor) calls
    ``note_sending``, ``answered`` and ``flush``; the dispatcher calls the rest, between runs.
    """

    def __init__(self, path: Path, *, sync: bool, reactor):
        self.path = path
        self._sync = sync
        self._reactor = reactor
        self._map: mmap.mmap | None = None
        self._end = 0  # where the next line goes: the first zero byte
        self._held = b""  # A lines not written yet

    def open(self) -> None:
        """Open and map the file (made if missing) and read what an earlier run of the engine left in it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # names the queues; private
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < CAPACITY:
                os.ftruncate(fd, CAPACITY)
                size = CAPACITY
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the map keeps the file
        end = self._map.find(b"\0")
        self._end = size if end < 0 else end
        # A line torn by a power loss must not swallow the next one.
        torn = self._end and self._map[self._end - 1] != ord("\n")
        self._held = b"\n" if torn else b""

    def close(self) -> None:
        """Unmap the file; what it holds stays for the next open."""
        mapped, self._map = self._map, None
        if mapped is not None:
            mapped.close()

    # The sending side.

    # The lines are JSON arrays, formatted here rather than by json.dumps: on the mllp sending
    # thread, building them with lists and json.dumps cost some 16 µs of CPU a message.

    def note_sending(self, delivery: Delivery) -> DeliveryResult | None:
        """Write that ``delivery`` goes now: None once written, else a RETRY result (it must not go)."""
        queued_at = repr(delivery.queued_at.timestamp()) if delivery.queued_at else "null"
        line = f'["S",{delivery.delivery_id},{delivery.message_id},{delivery.attempt},{queued_at}]\n'
        try:
            self._write(self._held + line.encode("ascii"))
        except OSError as error:
            return DeliveryResult(
                Outcome.RETRY, reason=f"the delivery journal {self.path} cannot be written: {error}"
            )
        return None

    def answered(self, delivery: Delivery, result: DeliveryResult) -> None:
        """Note the answer to ``delivery``; it is written with the next ``note_sending`` or ``flush``."""
        response = "null"
        if result.response is not None:
            response = '"' + base64.b64encode(result.response).decode("ascii") + '"'
        answer = f'"{result.outcome.value}",{response},{_quote(result.response_code)},{_quote(result.reason)}'
        line = f'["A",{delivery.delivery_id},{delivery.attempt},{answer}]\n'
        self._held += line.encode("ascii")

    def flush(self) -> None:
        """Write the answers held back (the end of a run)."""
        if self._held:
            try:
                self._write(self._held)
            except OSError:
                # The answers stay held in memory and go to the store with the round; should the
                # engine stop before that, the last one counts as in flight, as it would have.
                pass

    def from_reactor(self, method: Callable, *args) -> defer.Deferred:
        """Call ``note_sending`` or ``flush`` from the reactor thread: here, or on a pool thread to msync."""
        if not self._sync:
            return defer.execute(method, *args)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), method, *args)

    def _write(self, data: bytes) -> None:
        mapped = self._map
        if mapped is None:
            raise OSError("the journal is closed")
        end = self._end + len(data)
        if end >= len(mapped):  # keep a zero byte after the last line
            mapped.resize(max(2 * len(mapped), end + 1))
        mapped[self._end : end] = data
        self._end = end
        self._held = b""
        if self._sync:
            _msync(mapped)

    # The dispatcher, between runs.

    def unrecorded(self) -> list[Unrecorded]:
        """The attempts journalled since it was last emptied, in order of sending."""
        if not self._end and not self._held.strip():
            return []
        written = self._map[: self._end] if self._map is not None else b""
        attempts: dict[tuple[int, int], list] = {}
        for entry in _read_lines(written + self._held):
            if entry[0] == "S":
                _, delivery_id, message_id, attempt, queued_at = entry
                attempts.setdefault(
                    (delivery_id, attempt), [delivery_id, message_id, attempt, queued_at, None]
                )
            elif (key := (entry[1], entry[2])) in attempts:
                _, _, _, outcome, response, code, reason = entry
                body = base64.b64decode(response) if response is not None else None
                attempts[key][4] = DeliveryResult(Outcome(outcome), body, code, reason)
        return [
            Unrecorded(
                Delivery(
                    delivery_id,
                    message_id,
                    "",
                    "",
                    "",
                    b"",
                    attempt,
                    datetime.fromtimestamp(queued_at, UTC) if queued_at is not None else None,
                ),
                result,
            )
            for delivery_id, message_id, attempt, queued_at, result in attempts.values()
        ]

    def recorded(self) -> None:
        """Empty the journal: what it held is in the store."""
        self._held = b""
        if self._map is not None:
            # No msync: should the emptying be lost, replaying what the store has changes nothing.
            self._map[: self._end] = bytes(self._end)
            self._end = 0


class _NoJournal:
    """Journals nothing: for a send outside a dispatcher (a test, a tool)."""

    def note_sending(self, delivery: Delivery) -> None:
        return None

    def answered(self, delivery: Delivery, result: DeliveryResult) -> None:
        pass

    def flush(self) -> None:
        pass

    def from_reactor(self, method: Callable, *args) -> defer.Deferred:
        return defer.execute(method, *args)


#: What a destination journals into when no dispatcher gives it a journal.
NO_JOURNAL = _NoJournal()


class Journals:
    """Where the journals of a store's queues live (``<data_dir>/journal``), and whether they fsync."""

    def __init__(self, directory: Path, *, sync: bool, reactor):
        self.directory = directory
        self.sync = sync
        self._reactor = reactor

    def journal(self, channel: str, destination: str) -> DeliveryJournal:
        """The journal of the queue of ``destination`` in ``channel`` (not open yet)."""
        # quote() escapes "@" and "/", so the name is one path segment and says which queue it is.
        name = f"{quote(channel, safe='')}@{quote(destination, safe='')}.journal"
        if len(name) > _LONGEST_NAME:
            name = hashlib.sha256(f"{channel}\0{destination}".encode()).hexdigest() + ".journal"
        return DeliveryJournal(self.directory / name, sync=self.sync, reactor=self._reactor)


def _msync(mapped: mmap.mmap) -> None:
    """Write the map's changed pages to disk (durability: power_loss)."""
    mapped.flush()


def _read_lines(data: bytes) -> list[list]:
    """The entries of the file's lines; a torn last line (a power loss mid-write) is not one."""
    entries = []
    for line in data.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, list) and entry and entry[0] in ("S", "A"):
            entries.append(entry)
    return entries
