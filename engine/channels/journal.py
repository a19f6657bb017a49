"""A destination queue's journal: what went out and what came back, on disk before the next send.

A dispatcher records its attempts in the store once per round (one write for up to 250), so
without more a crash in the middle of a round would lose the answers of the messages already
sent, and they would all go again. The journal closes that gap for an append per message:
before a delivery can reach the partner its line ``S`` is written, and once its answer is in,
its line ``A`` (kept back and written with the next ``S``, or at the end of the run: one write per
message). Once the round is recorded in the store, the journal is emptied. After a crash, what
it still holds says which answers to record and which one delivery was in flight: the only one
that may reach the partner twice.

A write goes to the OS page cache, which a kill of the engine does not lose; with ``sync``
(``durability: power_loss``) each is followed by an fsync, so a power loss does not lose it
either. Appending to the page cache never waits for the disk, so destinations that send from the
reactor write their lines there; an fsync runs on a thread of the reactor's pool instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.model import Delivery, DeliveryResult, Outcome

__all__ = ["NO_JOURNAL", "DeliveryJournal", "Journals", "Unrecorded"]

_SYNC = getattr(os, "fdatasync", os.fsync)
# File systems take names of 255 bytes; longer (quoted) queue names are hashed.
_LONGEST_NAME = 200


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
        self._fd: int | None = None
        self._held = b""  # A lines not written yet
        self._entries: list[list] = []  # since the journal was last emptied: read at open, then noted

    def open(self) -> None:
        """Open the file (made if missing) and read what an earlier run of the engine left in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with open(self._fd, "rb", closefd=False) as existing:
            data = existing.read()
        self._entries = _read_lines(data)
        # A line torn by a power loss must not swallow the next one.
        self._held = b"\n" if data and not data.endswith(b"\n") else b""

    def close(self) -> None:
        """Close the file; what it holds stays for the next open."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # The sending side.

    def note_sending(self, delivery: Delivery) -> DeliveryResult | None:
        """Write that ``delivery`` goes now: None once written, else a RETRY result (it must not go)."""
        entry = [
            "S",
            delivery.delivery_id,
            delivery.message_id,
            delivery.attempt,
            delivery.queued_at.isoformat() if delivery.queued_at else None,
        ]
        try:
            self._write(self._held + _line(entry))
        except OSError as error:
            return DeliveryResult(
                Outcome.RETRY, reason=f"the delivery journal {self.path} cannot be written: {error}"
            )
        self._entries.append(entry)
        return None

    def answered(self, delivery: Delivery, result: DeliveryResult) -> None:
        """Note the answer to ``delivery``; it is written with the next ``note_sending`` or ``flush``."""
        response = base64.b64encode(result.response).decode("ascii") if result.response is not None else None
        entry = [
            "A",
            delivery.delivery_id,
            delivery.attempt,
            str(result.outcome),
            response,
            result.response_code,
            result.reason,
        ]
        self._entries.append(entry)
        self._held += _line(entry)

    def flush(self) -> None:
        """Write the answers held back (the end of a run)."""
        if self._held:
            try:
                self._write(self._held)
            except OSError:
                # The answers are noted in memory and go to the store with the round; should the
                # engine stop before that, the last one counts as in flight, as it would have.
                pass

    def from_reactor(self, method: Callable, *args) -> defer.Deferred:
        """Call ``note_sending`` or ``flush`` from the reactor thread: here, or on a pool thread to fsync."""
        if not self._sync:
            return defer.execute(method, *args)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), method, *args)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError("the journal is closed")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._held = b""
        if self._sync:
            _SYNC(self._fd)

    # The dispatcher, between runs.

    def unrecorded(self) -> list[Unrecorded]:
        """The attempts journalled since it was last emptied, in order of sending."""
        attempts: dict[tuple[int, int], list] = {}
        for entry in self._entries:
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
                    datetime.fromisoformat(queued_at) if queued_at else None,
                ),
                result,
            )
            for delivery_id, message_id, attempt, queued_at, result in attempts.values()
        ]

    def recorded(self) -> None:
        """Empty the journal: what it held is in the store."""
        self._entries = []
        self._held = b""
        if self._fd is not None:
            # No fsync: should the emptying be lost, replaying what the store has changes nothing.
            os.ftruncate(self._fd, 0)


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


def _line(entry: Sequence) -> bytes:
    # json.dumps with its defaults uses one cached encoder: half the time of any other settings.
    return json.dumps(entry).encode("utf-8") + b"\n"


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
