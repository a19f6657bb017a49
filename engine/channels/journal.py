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

A queue that may move to another node (a clustered engine) keeps the same lines in the store
instead (``StoreJournal``, a row of ``queue_journals``), where whoever holds the queue next reads
them. On one machine worker processes share ``data_dir``, so the file serves them all.
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

import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from engine.channels.leases import LOCAL_LEASES, Leases, queue_key
from engine.errors import StoreError
from engine.model import Delivery, DeliveryResult, LeaseToken, Outcome
from engine.store.db import create_engine_for
from engine.store.schema import leases as leases_table
from engine.store.schema import queue_journals

__all__ = [
    "NO_JOURNAL",
    "DeliveryJournal",
    "Journal",
    "Journals",
    "StoreJournal",
    "Unrecorded",
    "journal_engine",
]

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


class _LineJournal:
    """The lines of a queue's journal, written and read back; where they are kept is a subclass's.

    The sending side (one thread at a time: the destination's own, or the reactor) calls
    ``note_sending``, ``answered`` and ``flush``; the dispatcher calls the rest, between runs.
    A subclass gives ``open``, ``close``, ``_write`` (raising one of ``_unwritable``), ``_written``
    and ``_empty``.
    """

    #: What ``_write`` raises when the line cannot be kept: the delivery must not go then.
    _unwritable: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, where: str, *, blocks: bool, reactor):
        """``blocks``: a write waits for a disk or a server, so the reactor hands it to a pool thread."""
        self.where = where
        self._blocks = blocks
        self._reactor = reactor
        self._held = b""  # A lines not written yet

    # The sending side.

    # The lines are JSON arrays, formatted here rather than by json.dumps: on the mllp sending
    # thread, building them with lists and json.dumps cost some 16 µs of CPU a message.

    def note_sending(self, delivery: Delivery) -> DeliveryResult | None:
        """Write that ``delivery`` goes now: None once written, else a RETRY result (it must not go)."""
        queued_at = repr(delivery.queued_at.timestamp()) if delivery.queued_at else "null"
        line = f'["S",{delivery.delivery_id},{delivery.message_id},{delivery.attempt},{queued_at}]\n'
        try:
            self._write(self._held + line.encode("ascii"))
        except self._unwritable as error:
            return DeliveryResult(
                Outcome.RETRY, reason=f"the delivery journal {self.where} cannot be written: {error}"
            )
        self._held = b""
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
            except self._unwritable:
                # The answers stay held in memory and go to the store with the round; should the
                # engine stop before that, the last one counts as in flight, as it would have.
                return
            self._held = b""

    def from_reactor(self, method: Callable, *args) -> defer.Deferred:
        """Call ``note_sending`` or ``flush`` from the reactor: here, or on a pool thread if it blocks."""
        if not self._blocks:
            return defer.execute(method, *args)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), method, *args)

    # The dispatcher, between runs.

    def unrecorded(self) -> list[Unrecorded]:
        """The attempts journalled since it was last emptied, in order of sending."""
        written = self._written()
        if not written and not self._held.strip():
            return []
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
        self._empty()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _written(self) -> bytes:
        raise NotImplementedError

    def _empty(self) -> None:
        raise NotImplementedError


class DeliveryJournal(_LineJournal):
    """The journal of one destination queue: a file of JSON lines, emptied once a round is recorded."""

    def __init__(self, path: Path, *, sync: bool, reactor):
        super().__init__(str(path), blocks=sync, reactor=reactor)
        self.path = path
        self._sync = sync
        self._map: mmap.mmap | None = None
        self._end = 0  # where the next line goes: the first zero byte

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

    def _write(self, data: bytes) -> None:
        mapped = self._map
        if mapped is None:
            raise OSError("the journal is closed")
        end = self._end + len(data)
        if end >= len(mapped):  # keep a zero byte after the last line
            mapped.resize(max(2 * len(mapped), end + 1))
        mapped[self._end : end] = data
        self._end = end
        if self._sync:
            _msync(mapped)

    def _written(self) -> bytes:
        return self._map[: self._end] if self._map is not None else b""

    def _empty(self) -> None:
        if self._map is not None:
            # No msync: should the emptying be lost, replaying what the store has changes nothing.
            self._map[: self._end] = bytes(self._end)
            self._end = 0


class StoreJournal(_LineJournal):
    """The journal of a queue another node may take over: the same lines, in its ``queue_journals`` row.

    Written on a connection of its own (never the store's writer, which intake waits behind), from
    the sending thread: one UPDATE a note, appending the line, committed by itself (autocommit).
    Emptying costs no write of its own: once a round is recorded, the next write replaces the
    row's lines instead of appending to them (until then the row holds a recorded round, which a
    replay leaves as it is). ``token``, when the queue is held under a lease, fences every write:
    it is made only while the lease row still names this holding, so a node that lost the queue
    cannot send from it any more.

    The statements are compiled once and run on the driver's connection: through SQLAlchemy's
    execution a note cost some 300 µs of CPU on the sending thread, on the driver 80 to 100.
    """

    def __init__(self, key: str, engine: sa.Engine, *, reactor, token: Callable[[], LeaseToken | None]):
        super().__init__(f"in the store ({key})", blocks=True, reactor=reactor)
        self.key = key
        self._engine = engine
        self._token = token
        self._unwritable = (engine.dialect.loaded_dbapi.Error, sa.exc.SQLAlchemyError, StoreError)
        self._statements: dict[str, _Compiled] = {}
        self._values: dict[str, object] = {}
        self._connection = None  # the driver's connection, out of the engine's pool
        self._cursor = None
        self._lines = b""  # what the row holds (this holder's lines since the last emptying)
        self._replace = False  # the next write sets the row's lines (emptied, or a write failed)

    def open(self) -> None:
        """Read what the queue's last holder left in the row (made if missing), on a connection of its own."""
        fence = self._token()
        self._statements = _journal_statements(self._engine.dialect, fenced=fence is not None)
        self._values = {"key": self.key}
        if fence is not None:
            self._values.update(lease=fence.key, holder=fence.holder, token=fence.token)
        try:
            cursor = self._connect()
            self._statements["make"].run(cursor, self._values)
            row = self._statements["read"].run(cursor, self._values).fetchone()
        except BaseException:
            self.close()
            raise
        self._lines = row[0].encode("ascii")  # whole lines: a line is written in one UPDATE
        self._held = b""
        self._replace = False

    def close(self) -> None:
        """Close the connection; the row keeps what it holds for the queue's next holder."""
        connection, self._connection, self._cursor = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except self._unwritable:
                pass  # already broken: nothing to give back

    def _connect(self):
        """The cursor of the journal's connection, connecting first when there is none."""
        if self._connection is None:
            connection = self._engine.raw_connection()
            # Out of the pool: closing it closes it, and a journal per queue never waits for a slot.
            connection.detach()
            self._engine.dialect.set_isolation_level(connection.dbapi_connection, "AUTOCOMMIT")
            self._connection, self._cursor = connection, connection.cursor()
        return self._cursor

    def _write(self, data: bytes) -> None:
        replace = self._replace
        if replace:
            data = self._lines + data
        values = {**self._values, "data": data.decode("ascii"), "now": datetime.now(UTC)}
        try:
            # TRANSACTION: one note of the queue's journal (with the answer held back before it).
            written = self._statements["set" if replace else "append"].run(self._connect(), values).rowcount
        except self._unwritable:
            # Whether the commit got through is unknown: start over on a new connection, and have
            # the next write say all the row must hold.
            self.close()
            self._replace = True
            raise
        if written != 1:
            raise StoreError(f"the queue {self.key} is no longer held by this process")
        self._lines = data if replace else self._lines + data
        self._replace = False

    def _written(self) -> bytes:
        return self._lines

    def _empty(self) -> None:
        self._lines = b""
        self._replace = True


class _Compiled:
    """A statement compiled once for a dialect, run on a driver's cursor (no SQLAlchemy per call)."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positions = compiled.positiontup  # the names in order, for a positional paramstyle
        self._processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.bind_processor(dialect)) is not None
        }

    def run(self, cursor, values: dict):
        """Execute on ``cursor`` with the named ``values``; returns the cursor."""
        processed = {
            name: processor(values[name]) for name, processor in self._processors.items() if name in values
        }
        values = {**values, **processed} if processed else values
        if self._positions is not None:
            cursor.execute(self.sql, tuple(values[name] for name in self._positions))
        else:
            cursor.execute(self.sql, values)
        return cursor


def _journal_statements(dialect, *, fenced: bool) -> dict[str, _Compiled]:
    """The store journal's statements for ``dialect``: make and read the row, append to or set its lines."""
    row = queue_journals.c
    key = row.key == sa.bindparam("key")
    missing = sa.select(sa.bindparam("key", type_=row.key.type), sa.literal_column("''"))
    statements = {
        "make": sa.insert(queue_journals).from_select(
            ["key", "lines"], missing.where(~sa.exists().where(key))
        ),
        "read": sa.select(row.lines).where(key),
    }
    for name, lines in (("append", row.lines + sa.bindparam("data")), ("set", sa.bindparam("data"))):
        update = sa.update(queue_journals).values(
            lines=lines, updated_at=sa.bindparam("now", type_=row.updated_at.type)
        )
        update = update.where(key)
        if fenced:
            lease = leases_table.c
            update = update.where(
                sa.exists().where(
                    lease.key == sa.bindparam("lease"),
                    lease.holder == sa.bindparam("holder"),
                    lease.token == sa.bindparam("token"),
                )
            )
        statements[name] = update
    return {name: _Compiled(statement, dialect) for name, statement in statements.items()}


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
    """Where a store's queues keep their journals, and how durably.

    In files under ``directory`` (``<data_dir>/journal``), or with ``store_url`` (a clustered
    engine: a queue may move to another node) in the store's ``queue_journals``, each queue's
    writes fenced by its lease in ``leases``. ``sync`` (``durability: power_loss``) makes each
    write durable: an msync of the file; in PostgreSQL a synchronous commit, otherwise the journal's
    connection commits asynchronously (a crash of the engine's node loses nothing, the server has
    the line; a crash of the PostgreSQL server may lose its last lines).
    """

    def __init__(
        self,
        directory: Path,
        *,
        sync: bool,
        reactor,
        store_url: str | None = None,
        lock_timeout: float = 5.0,
        leases: Leases = LOCAL_LEASES,
    ):
        self.directory = directory
        self.sync = sync
        self._reactor = reactor
        self._leases = leases
        self._engine = None if store_url is None else journal_engine(store_url, sync, lock_timeout)

    def journal(self, channel: str, destination: str) -> DeliveryJournal | StoreJournal:
        """The journal of the queue of ``destination`` in ``channel`` (not open yet)."""
        if self._engine is not None:
            key = queue_key(channel, destination)
            return StoreJournal(
                key, self._engine, reactor=self._reactor, token=lambda: self._leases.token(key)
            )
        # quote() escapes "@" and "/", so the name is one path segment and says which queue it is.
        name = f"{quote(channel, safe='')}@{quote(destination, safe='')}.journal"
        if len(name) > _LONGEST_NAME:
            name = hashlib.sha256(f"{channel}\0{destination}".encode()).hexdigest() + ".journal"
        return DeliveryJournal(self.directory / name, sync=self.sync, reactor=self._reactor)


def journal_engine(url: str, sync: bool, lock_timeout: float) -> sa.Engine:
    """The engine the store journals connect with: PostgreSQL commits asynchronously unless ``sync``."""
    engine = create_engine_for(url, durability="power_loss" if sync else "process", lock_timeout=lock_timeout)
    if engine.dialect.name == "postgresql" and not sync:

        @sa.event.listens_for(engine, "connect")
        def _asynchronous_commit(dbapi_connection, _record) -> None:
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            try:
                dbapi_connection.execute("SET synchronous_commit = off")
            finally:
                dbapi_connection.autocommit = autocommit

    return engine


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
