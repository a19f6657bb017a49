"""The store's threads, behind one facade: every write on one writer thread, intake first; reads on a pool.

``StorePool`` queues each write for a writer thread (writer_lane.py: intake's adds first, each
group of adds in one transaction) and runs reads on a thread pool; every Deferred fires on the
reactor thread. On PostgreSQL the adds have a writer thread of their own beside the calls'.

On SQLite with ``durability: process`` (a commit is a write into the WAL, no fsync), the adds
made during one reactor turn are committed at the end of that turn on the reactor thread
itself, when no other write is running: a thread hop each way and the two threads' contention
for the GIL cost more than the commit. Whenever that cannot be done at once (the writer thread
or another process holds the write lock, the WAL is full, or anything fails) the adds go to the
writer thread, which waits for the lock as long as ``lock_timeout`` allows and judges errors as
it always does. An add of many messages (a large batch, ``INLINE_MAX_MESSAGES``) and a file's
always go to the writer thread: their insert would hold the reactor. When other processes write
the same SQLite file (``shared``), each transaction of the writer thread and each inline commit
also holds the file's ``WriterLock`` (writelock.py), as theirs do: they take turns, woken at once.

On SQLite the writer thread checkpoints the store file's WAL, counting the inline commits too
(checkpoints.py), and the record's tables have a file of their own: their writes
(``write_record``; the writer's elsewhere) run on a thread of their own (record_lane.py), which
takes its lock only.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.errors import StoreError
from engine.lograte import LogRate
from engine.model import NewMessage, SourceFile
from engine.store.calls import PendingCall, as_store_error, fire
from engine.store.checkpoints import StoreCheckpoints
from engine.store.db import sqlite_file
from engine.store.defaults import WAL_MAX_BYTES
from engine.store.driver.record_attach import record_file
from engine.store.kept import KeptConnection
from engine.store.record_lane import RecordLane
from engine.store.wal import WalGuard
from engine.store.writelock import WriterLock
from engine.store.writer_lane import InsertGroups, PendingAdd, WriterLane, take_adds


class State(enum.Enum):
    """Where a StorePool is in its life: new, running, stopping (finishing what was asked), stopped."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class _Layout:
    """The writer threads and connections a store gets, from its URL and durability."""

    sqlite: bool  # the writer thread checkpoints the store file's WAL; no thread of its own for the adds
    inline: bool  # the reactor thread commits adds (SQLite, durability: process)
    record: Path | None  # SQLite: the record's file, whose writes run on a thread of their own

    @classmethod
    def of(cls, url: URL, durability: str) -> _Layout:
        sqlite = url.get_backend_name() == "sqlite"
        database = sqlite_file(url)
        return cls(
            sqlite, sqlite and durability == "process", None if database is None else record_file(database)
        )

    @property
    def writer_connections(self) -> int:
        """The writers' connections at most: a call's own (on the writer thread, and on the record's);
        the one kept by the thread that commits groups of adds (the writer thread on SQLite, which
        checkpoints with it too; on PostgreSQL the adds' thread: the writer thread then only runs
        calls and never opens its own); the reactor's, for inline commits; the record thread's,
        for its checkpoints."""
        return 2 + self.inline + (2 if self.record is not None else 0)


class StorePool:
    """Every write on one thread, intake's adds first and group-committed; reads on a pool; Deferreds."""

    def __init__(
        self,
        *,
        reactor,
        durability: str,
        max_batch: int,
        read_threads: int,
        wal_max_bytes: int = WAL_MAX_BYTES,
        lock_timeout: float = 5.0,
        shared: bool = False,
        ahead: bool = False,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if read_threads < 1:
            raise ValueError(f"read_threads must be at least 1, not {read_threads}")
        self._reactor = reactor
        self._failure_lines = LogRate(FAILURE_LOG_SECONDS, reactor.seconds)
        self._durability = durability
        self._wal_max_bytes = wal_max_bytes
        self._max_batch = max_batch
        self._read_threads = read_threads
        self._lock_timeout = lock_timeout
        self._shared = shared  # other processes write the same SQLite file: take turns (WriterLock)
        self._ahead = ahead  # ... and this one's go first there (WriterLock's ahead)
        self._state = State.NEW
        self._stop_waiters: list[defer.Deferred] = []
        self._engine: sa.Engine | None = None
        self._insert_groups: InsertGroups | None = None
        self._reads: ThreadPool | None = None
        self._writer: WriterLane | None = None  # every call, and the adds when there is no _adds lane
        self._adds: WriterLane | None = None  # PostgreSQL: the adds, on a thread of their own
        self._record: RecordLane | None = None  # SQLite: the record's writes, in its own file (write_record)
        self._lanes_running = 0
        self._lanes_lock = threading.Lock()  # for _lanes_running: each thread counts itself out
        self._checkpoints: StoreCheckpoints | None = None  # SQLite: the store file's WAL
        self._inline_connection: KeptConnection | None = None  # the reactor thread's, for inline adds
        self._inline_group: list[PendingAdd] = []  # adds of this reactor turn, committed at its end
        self._inline_flush = None  # the pending call that commits them
        self._inline_since = 0.0  # when the group's first add was asked (reactor seconds)
        self._idle_senders: Callable[[], int] | None = None  # wait_for_senders
        # Held by whichever thread is in a write transaction, so the reactor never waits for the writer
        # (SQLite, inline adds; any other store has nothing to coordinate, see start()).
        self._transaction_lock: Any = contextlib.nullcontext()
        self._writer_lock: WriterLock | None = None  # SQLite file: other processes' side, taken inside it

    @property
    def state(self) -> State:
        """Where the pool is in its life."""
        return self._state

    @property
    def record_apart(self) -> bool:
        """Whether the record's writes take a lock of their own (SQLite, its own file): ``write_record``."""
        return self._record is not None

    def connections(self, url: str | URL) -> int:
        """How many connections the pool's threads may hold at once on the store at ``url``.

        Every reader's and the writers' (``_Layout.writer_connections``): 5 on SQLite with inline
        commits and the record in its own file, 2 on PostgreSQL.
        """
        return self._read_threads + _Layout.of(make_url(url), self._durability).writer_connections

    def start(self, engine: sa.Engine, insert_groups: InsertGroups) -> None:
        """Start the threads on ``engine`` (disposed of once stopped); adds go to ``insert_groups``.

        ``insert_groups`` is MessageRepository.insert_groups of a repository on ``engine``.
        """
        if self._state is not State.NEW:
            raise StoreError(f"the message store cannot start: it is {self._state.value}")
        self._engine = engine
        self._insert_groups = insert_groups
        self._reads = ThreadPool(minthreads=0, maxthreads=self._read_threads, name="hl7engine-store-read")
        self._reads.start()
        layout = _Layout.of(engine.url, self._durability)
        wal = WalGuard(sqlite_file(engine), self._wal_max_bytes)  # nothing to watch on PostgreSQL
        holding_file = contextlib.nullcontext
        if self._shared and (database := sqlite_file(engine)) is not None:
            self._writer_lock = WriterLock(database, self._lock_timeout, ahead=self._ahead)
            holding_file = self._writer_lock.held
        if layout.inline:
            self._transaction_lock = threading.Lock()
            # No waiting on the reactor thread: a busy database sends the adds to the writer at once.
            self._inline_connection = KeptConnection(engine, {"busy_timeout": 0})
        if layout.sqlite:
            self._checkpoints = StoreCheckpoints(wal, self._transaction_lock)
        if layout.record is not None:
            self._record = RecordLane(
                engine,
                layout.record,
                reactor=self._reactor,
                wal_max_bytes=self._wal_max_bytes,
                lock_timeout=self._lock_timeout,
                shared=self._shared,
                finished=self._lane_finished,
            )

        def lane(name: str, checkpoints: StoreCheckpoints | None) -> WriterLane:
            return WriterLane(
                name,
                KeptConnection(engine),
                reactor=self._reactor,
                insert_groups=insert_groups,
                max_batch=self._max_batch,
                wal=wal,
                transaction_lock=self._transaction_lock,
                holding_file=holding_file,
                checkpoints=checkpoints,
                failure_lines=self._failure_lines,
                finished=self._lane_finished,
            )

        self._writer = lane("hl7engine-store-writer", self._checkpoints)
        if not layout.sqlite:
            # PostgreSQL takes concurrent writers: a message's commit (and its sender's ACK) does not
            # wait behind the runners' and dispatchers' writes, which need not come before it (a
            # message is processed at intake only once the writes of its channel's runner are done).
            self._adds = lane("hl7engine-store-adds", None)
        threads = [thread for thread in (self._writer, self._adds, self._record) if thread is not None]
        self._state = State.RUNNING
        self._lanes_running = len(threads)
        for thread in threads:
            thread.start()

    def wait_for_senders(self, idle_senders: Callable[[], int]) -> None:
        """Let inline groups wait (``GROUP_WAIT_SECONDS`` at most) for idle connected senders.

        An idle sender is connected but has nothing in flight; ``idle_senders()`` says how many
        there are right now. Each commit costs the same for one message as for eight (the pages of
        every index are written again), so when connected senders are about to send their next
        message, the group waits for them; once every connected sender is waiting for the store,
        it commits. With one sender, or with none idle, nothing ever waits: the add that finds
        no sender idle commits its group at once, without waiting for the end of the reactor's turn
        (no sender can join a group it waits for; at one connection that turn was one per message).
        """
        self._idle_senders = idle_senders

    def stop(self) -> defer.Deferred:
        """Commit every write asked for, then stop the threads; fires with None once done (idempotent)."""
        if self._state is State.NEW:
            self._state = State.STOPPED
        if self._state is State.STOPPED:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._stop_waiters.append(waiter)
        if self._state is State.RUNNING:
            self._hand_over_inline()
            self._state = State.STOPPING
            for thread in (self._writer, self._adds, self._record):
                if thread is not None:
                    thread.stop()
        return waiter

    def add(
        self, new_messages: Sequence[NewMessage], source_file: SourceFile | None = None
    ) -> defer.Deferred:
        """Store the messages (and their source file) in one transaction; fires with the ids after COMMIT."""
        if self._state is not State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        batch = tuple(new_messages)
        if not batch and source_file is None:
            return defer.succeed([])
        pending = PendingAdd(batch, source_file, defer.Deferred())
        if self._inline_connection is None or source_file is not None or len(batch) > INLINE_MAX_MESSAGES:
            # A file or a large batch would hold the reactor for as long as its insert takes.
            self._hand_over_inline()  # adds are committed in the order asked
            return self._enqueue(pending)
        if not self._inline_group:
            self._inline_since = self._reactor.seconds()
        self._inline_group.append(pending)
        if self._idle_senders is not None and not self._idle_senders():
            # Every connected sender waits for the store (this add was the last of them): now.
            if self._inline_flush is not None:
                self._inline_flush.cancel()
            self._commit_group()
        elif self._inline_flush is None:
            # callLater(0) runs after every connection that was readable in this turn has been read.
            self._inline_flush = self._reactor.callLater(0, self._commit_inline)
        return pending.deferred

    def write(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the single writer thread, in order with every other call.

        Adds asked before it commit first; adds of received messages asked after it may too. Keep
        it short: a received message's commit may wait for it. Errors arrive as StoreError.
        """
        if self._state is not State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        self._hand_over_inline()  # writes run in the order asked: adds of this turn go first
        return self._enqueue(PendingCall(function, args, kwargs, defer.Deferred()))

    def write_record(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)``, a write of the patient record's tables only, on its thread.

        On SQLite (the record in a file of its own) its thread, ``RecordLane``, runs them in order,
        beside the writer, never holding it up; elsewhere it is ``write``. Errors as StoreError.
        """
        if self._record is None:
            return self.write(function, *args, **kwargs)
        if self._state is not State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        return self._record.write(function, *args, **kwargs)

    def read(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the read pool; errors arrive as StoreError."""
        # Once stopping, the pool may already be shut down and would silently drop the call.
        if self._state is not State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        d = deferToThreadPool(self._reactor, self._reads, function, *args, **kwargs)
        return d.addErrback(
            lambda failure: (
                failure
                if failure.check(StoreError)
                else Failure(as_store_error(failure.value, function.__name__))
            )
        )

    # Inline adds: everything here runs on the reactor thread.

    def _commit_inline(self) -> None:
        """Commit the group's adds here and now if nothing else is writing; else hand them to the writer."""
        waited = self._reactor.seconds() - self._inline_since
        if waited < GROUP_WAIT_SECONDS and self._idle_senders is not None and self._idle_senders():
            self._inline_flush = self._reactor.callLater(GROUP_WAIT_SECONDS - waited, self._commit_inline)
            return
        self._commit_group()

    def _commit_group(self) -> None:
        """Commit the adds asked so far (in chunks of max_batch) here, or hand them to the writer."""
        self._inline_flush = None
        group, self._inline_group = collections.deque(self._inline_group), []
        while group:
            chunk = take_adds(group, self._max_batch)
            if not self._commit_here(chunk):
                for pending in chunk + list(group):  # in order, ahead of the calls the writer has queued
                    self._enqueue(pending)
                return

    def _commit_here(self, group: list[PendingAdd]) -> bool:
        """Commit the group here and fire its Deferreds; False (nothing fired) if the writer must do it."""
        if self._checkpoints.inline_paused or not self._transaction_lock.acquire(blocking=False):
            return False
        if self._writer_lock is not None and not self._writer_lock.try_take():
            self._transaction_lock.release()  # another process writes: the writer waits for it
            return False
        try:
            ids = self._insert_groups(
                [(pending.messages, None) for pending in group], connection=self._inline_connection.get()
            )
            self._checkpoints.counted()
        except Exception:
            # Locked by another process, or anything else: the writer retries with the full lock
            # timeout and reports what is still wrong then, exactly as for its own groups.
            self._inline_connection.drop()
            return False
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()
            self._transaction_lock.release()
        if self._checkpoints.wake_writer():  # a checkpoint is due: the writer may be waiting
            self._writer.wake()
        fire([(pending.deferred.callback, pending_ids) for pending, pending_ids in zip(group, ids)])
        return True

    def _hand_over_inline(self) -> None:
        """Hand the adds waiting for the end of the turn to the writer (stopping, or an add only it does)."""
        if self._inline_flush is not None:
            self._inline_flush.cancel()
            self._inline_flush = None
        group, self._inline_group = self._inline_group, []
        for pending in group:
            self._enqueue(pending)

    def _enqueue(self, pending: PendingAdd | PendingCall) -> defer.Deferred:
        lane = self._adds if self._adds is not None and isinstance(pending, PendingAdd) else self._writer
        lane.put(pending)
        return pending.deferred

    # Stopping: each thread counts itself out on its way out, the last closes the rest for the reactor.

    def _lane_finished(self) -> None:
        """A writer thread (the record's too) has stopped: the last one out closes the rest."""
        with self._lanes_lock:
            self._lanes_running -= 1
            last = not self._lanes_running
        if last:
            self._close()

    def _close(self) -> None:
        """The last writer thread out closes the rest and tells the reactor."""
        try:
            self._reads.stop()  # runs the reads already queued, then joins the threads
            if self._inline_connection is not None:  # no add() commits inline once stopping
                self._inline_connection.drop()
            self._engine.dispose()
            if self._writer_lock is not None:
                self._writer_lock.close()
        finally:
            self._reactor.callFromThread(self._stopped)

    def _stopped(self) -> None:
        """On the reactor thread: every thread has stopped; fire the Deferreds of stop()."""
        self._state = State.STOPPED
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


# An add of more messages than this (a large batch) is never committed inline, on the reactor thread.
INLINE_MAX_MESSAGES = 64

# How long an inline group waits at most for connected senders to join it (see wait_for_senders).
GROUP_WAIT_SECONDS = 0.002

# A failing store (a full disk) fails every group: at most one warning about it this often.
FAILURE_LOG_SECONDS = 10.0
