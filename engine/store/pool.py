"""The store's threads: every write on one writer thread, intake first, with group commit; reads on a pool.

``add()`` calls pending together are committed in one transaction (group commit); every write's
Deferred fires after COMMIT, on the reactor thread. Calls (``write()``: processing, attempts)
run in the order asked; the adds of received messages go ahead of the calls still queued, so a
sender's ACK waits at most for the one transaction running (``_Lane``), which callers keep short.

On SQLite with ``durability: process`` (a commit is a write into the WAL, no fsync), the adds
made during one reactor turn are committed at the end of that turn on the reactor thread
itself, when no other write is running: a thread hop each way and the two threads' contention
for the GIL cost more than the commit. Whenever that cannot be done at once (the writer thread
or another process holds the write lock, or anything fails) the adds go to the writer thread,
which waits for the lock as long as ``lock_timeout`` allows and judges errors as it always does.
An add of many messages (a large batch, ``INLINE_MAX_MESSAGES``) and a file's always go to the
writer thread: their insert would hold the reactor. When other processes write the same SQLite
file (``shared``), each transaction of the writer thread and each inline commit also holds the
file's ``WriterLock`` (writelock.py), as theirs do: they take turns, woken at once.

On SQLite the record's tables have a file of their own: their writes (``write_record``; the
writer's elsewhere) run on a thread of their own (record_lane.py), which takes its lock only.
The writer thread checkpoints the store file's WAL (no connection does as it commits), after as
many commits (inline or its own) as write an eighth of ``wal_max_bytes`` (so that it starts
over, written in place), and truncates it once it has grown past half of ``wal_max_bytes``; past
two thirds the adds wait for it (wal.py). A failed checkpoint is a warning, and the next idle
moment, or the next growth past the limit, tries again, so a store whose disk was full recovers
as soon as there is space again.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.errors import StoreError
from engine.lograte import LogRate
from engine.model import NewMessage, SourceFile
from engine.store.calls import PendingCall, as_store_error, fire
from engine.store.db import sqlite_file
from engine.store.defaults import WAL_MAX_BYTES
from engine.store.driver import checkpoint_wal
from engine.store.driver.record_attach import record_file
from engine.store.kept import KeptConnection
from engine.store.record_lane import RecordLane
from engine.store.wal import WalGuard
from engine.store.writelock import WriterLock

log = Logger(namespace="engine.store")

# What inserts groups of adds: MessageRepository.insert_groups.
_InsertGroups = Callable[..., list[list[int]]]


@dataclass(slots=True)
class _PendingAdd:
    """An add() waiting for the writer; adds next to each other in the queue share one transaction."""

    messages: tuple[NewMessage, ...]
    source_file: SourceFile | None
    deferred: defer.Deferred


class _Lane:
    """A writer thread's queues and kept connection: a transaction at a time, intake's adds first.

    ``intake`` holds the adds of received messages (no source file), in order; ``pending`` every
    other write (calls, a file's adds), in order. Whenever adds wait in ``intake``, they are
    committed (one group) before the next of ``pending``: a sender's ACK never waits behind the
    downstream work queued before it (a record run, a round of attempts, processing), only for
    the one transaction running. After a group, a waiting call goes next, so calls are never
    starved by steady intake. No add relies on a call queued before it: a caller that needs a
    call's write first waits for its Deferred.
    """

    def __init__(self, name: str, connection: KeptConnection):
        self.name = name
        self.intake: collections.deque[_PendingAdd] = collections.deque()
        self.pending: collections.deque[_PendingAdd | PendingCall] = collections.deque()
        self.last_was_intake = False  # the last work taken was a group of intake's adds
        self.wakeup = threading.Condition()
        self.connection = connection

    def queue_for(self, pending: _PendingAdd | PendingCall) -> collections.deque:
        """The queue ``pending`` waits in."""
        if isinstance(pending, _PendingAdd) and pending.source_file is None:
            return self.intake
        return self.pending


class State(enum.Enum):
    """Where a StorePool is in its life: new, running, stopping (finishing what was asked), stopped."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


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
        self._wal = WalGuard(None, wal_max_bytes)  # watches the file once started on SQLite
        self._max_batch = max_batch
        self._read_threads = read_threads
        self._lock_timeout = lock_timeout
        self._shared = shared  # other processes write the same SQLite file: take turns (WriterLock)
        self._ahead = ahead  # ... and this one's go first there (WriterLock's ahead)
        self._state = State.NEW
        self._stop_waiters: list[defer.Deferred] = []
        self._engine: sa.Engine | None = None
        self._insert_groups: _InsertGroups | None = None
        self._reads: ThreadPool | None = None
        self._writer: _Lane | None = None  # every call, and the adds when there is no _adds lane
        self._adds: _Lane | None = None  # PostgreSQL: the adds, on a thread of their own beside the calls
        self._record: RecordLane | None = None  # SQLite: the record's writes, in its own file (write_record)
        self._lanes_running = 0
        self._inline_connection: KeptConnection | None = None  # the reactor thread's, for inline adds
        self._inline_group: list[_PendingAdd] = []  # adds of this reactor turn, committed at its end
        self._inline_flush = None  # the pending call that commits them
        self._inline_since = 0.0  # when the group's first add was asked (reactor seconds)
        self._idle_senders: Callable[[], int] | None = None  # wait_for_senders
        self._commits = 0  # SQLite: commits (inline and the writer's) since the writer last checkpointed
        self._last_commit = 0.0  # time.monotonic() of the last one
        self._counts_commits = False  # SQLite: the writer counts its own commits too (_count_commit)
        self._inline_paused = False  # the WAL is full: adds go to the writer, which checkpoints first
        self._wal_checked_at = 0.0  # time.monotonic() when an inline commit last looked at its size
        # Held by whichever thread is in a write transaction, so the reactor never waits for the writer
        # (SQLite, inline adds; any other store has nothing to coordinate, see start()).
        self._transaction_lock = threading.Lock()
        self._writer_lock: WriterLock | None = None  # SQLite file: other processes' side, taken inside it
        self._holding_file = contextlib.nullcontext  # its held() once there is one: the writer's side

    @property
    def state(self) -> State:
        """Where the pool is in its life."""
        return self._state

    @property
    def record_apart(self) -> bool:
        """Whether the record's writes take a lock of their own (SQLite, its own file): ``write_record``."""
        return self._record is not None

    @property
    def connections(self) -> int:
        """How many connections the pool's threads may hold at once: every reader's, the writers' five."""
        return self._read_threads + 5

    def start(self, engine: sa.Engine, insert_groups: _InsertGroups) -> None:
        """Start the threads on ``engine`` (disposed of once stopped); adds go to ``insert_groups``.

        ``insert_groups`` is MessageRepository.insert_groups of a repository on ``engine``.
        """
        if self._state is not State.NEW:
            raise StoreError(f"the message store cannot start: it is {self._state.value}")
        self._engine = engine
        self._insert_groups = insert_groups
        self._reads = ThreadPool(minthreads=0, maxthreads=self._read_threads, name="hl7engine-store-read")
        self._reads.start()
        self._writer = _Lane("hl7engine-store-writer", KeptConnection(engine))
        lanes = [self._writer]
        if engine.dialect.name == "sqlite":
            self._counts_commits = True
            self._wal = WalGuard(sqlite_file(engine), self._wal_max_bytes)
            if self._shared and (database := sqlite_file(engine)) is not None:
                self._writer_lock = WriterLock(database, self._lock_timeout, ahead=self._ahead)
                self._holding_file = self._writer_lock.held
            if self._durability == "process":
                # No waiting on the reactor thread: a busy database sends the adds to the writer at once.
                self._inline_connection = KeptConnection(engine, {"busy_timeout": 0})
            if (database := sqlite_file(engine)) is not None:
                self._record = RecordLane(
                    engine,
                    record_file(database),
                    reactor=self._reactor,
                    wal_max_bytes=self._wal_max_bytes,
                    lock_timeout=self._lock_timeout,
                    shared=self._shared,
                    finished=self._lane_finished,
                )
        else:
            # PostgreSQL takes concurrent writers: a message's commit (and its sender's ACK) does not
            # wait behind the runners' and dispatchers' writes, which need not come before it (a
            # message is processed at intake only once the writes of its channel's runner are done).
            self._adds = _Lane("hl7engine-store-adds", KeptConnection(engine))
            lanes.append(self._adds)
        if self._inline_connection is None:
            self._transaction_lock = contextlib.nullcontext()
        self._state = State.RUNNING
        self._lanes_running = len(lanes) + (self._record is not None)
        for lane in lanes:
            threading.Thread(
                target=self._write_until_stopped, args=(lane,), name=lane.name, daemon=True
            ).start()
        if self._record is not None:
            self._record.start()

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
            for lane in (self._writer, self._adds):
                if lane is not None:
                    with lane.wakeup:
                        lane.wakeup.notify()
            if self._record is not None:
                self._record.stop()
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
        pending = _PendingAdd(batch, source_file, defer.Deferred())
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
            chunk = _take_adds(group, self._max_batch)
            if not self._commit_here(chunk):
                for pending in chunk + list(group):  # in order, ahead of the calls the writer has queued
                    self._enqueue(pending)
                return

    def _commit_here(self, group: list[_PendingAdd]) -> bool:
        """Commit the group here and fire its Deferreds; False (nothing fired) if the writer must do it."""
        if self._inline_paused or not self._transaction_lock.acquire(blocking=False):
            return False
        if self._writer_lock is not None and not self._writer_lock.try_take():
            self._transaction_lock.release()  # another process writes: the writer waits for it
            return False
        try:
            ids = self._insert_groups(
                [(pending.messages, None) for pending in group], connection=self._inline_connection.get()
            )
            self._commits += 1  # under the lock, as the checkpoint that counts them from zero
        except Exception:
            # Locked by another process, or anything else: the writer retries with the full lock
            # timeout and reports what is still wrong then, exactly as for its own groups.
            self._inline_connection.drop()
            return False
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()
            self._transaction_lock.release()
        self._last_commit = now = time.monotonic()
        if self._commits == self._wal.checkpoint_commits:
            with self._writer.wakeup:  # a checkpoint is due (_checkpoint_due): the writer may be waiting
                self._writer.wakeup.notify()
        if now - self._wal_checked_at >= _WAL_CHECK_SECONDS:
            # A checkpoint's fsync may take long enough for inline commits to fill the WAL meanwhile,
            # and a failed one must not let them fill the disk. A stat on every commit cost ~20 µs of
            # CPU a message at 8 connections (it lets go of the GIL), hence at most one per interval.
            self._wal_checked_at = now
            size = self._wal.size()
            self._inline_paused = self._wal.full(size)
            if self._inline_paused or self._wal.truncation_due(size):
                with self._writer.wakeup:  # the writer wakes to checkpoint (_next_work)
                    self._writer.wakeup.notify()
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

    def _enqueue(self, pending: _PendingAdd | PendingCall) -> defer.Deferred:
        lane = self._adds if self._adds is not None and isinstance(pending, _PendingAdd) else self._writer
        with lane.wakeup:
            lane.queue_for(pending).append(pending)
            lane.wakeup.notify()
        return pending.deferred

    # Everything below runs on the writer thread.

    def _write_until_stopped(self, lane: _Lane) -> None:
        try:
            while (work := self._next_work(lane)) is not None:
                if work is _CHECKPOINT:
                    self._checkpoint()
                elif isinstance(work, PendingCall):
                    self._run_call(work)
                else:
                    self._write(work, lane)
            lane.connection.drop()
        finally:
            self._lane_finished()

    def _lane_finished(self) -> None:
        """A writer thread (the record's too) has stopped: the last one out closes the rest."""
        with self._writer.wakeup:
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

    def _next_work(self, lane: _Lane) -> PendingCall | list[_PendingAdd] | object | None:
        """Wait for work: intake's adds first (those that fit in max_batch, at least one), else the
        next call alone or the file adds at the head of the queue, _CHECKPOINT when due
        (_checkpoint_due); None to exit.

        The checkpoint is returned rather than run here: the reactor takes this lock to queue work.
        """
        with lane.wakeup:
            while True:
                # Senders wait for the adds queued: a checkpoint comes after them, unless the WAL
                # has grown past its limit (a PASSIVE pass took up to 50 ms on a busy machine).
                if (
                    lane is self._writer
                    and self._checkpoint_due()
                    and not (lane.intake and not self._wal.truncation_due())
                ):
                    return _CHECKPOINT
                if lane.intake or lane.pending or self._state is not State.RUNNING:
                    break
                lane.wakeup.wait(_CHECKPOINT_SECONDS)
            # Intake first, but a call waits for one group of adds at most: under steady intake the
            # writer alternates, so processing and delivery go on (a group takes every add queued).
            if lane.intake and not (lane.pending and lane.last_was_intake):
                lane.last_was_intake = True
                return _take_adds(lane.intake, self._max_batch)
            lane.last_was_intake = False
            if not lane.pending:
                return None
            if isinstance(lane.pending[0], PendingCall):
                return lane.pending.popleft()
            return _take_adds(lane.pending, self._max_batch)

    def _checkpoint_due(self) -> bool:
        """Whether to checkpoint: the WAL passed its limit, or commits wrote to it, and none
        came for a while or many did.

        None came for _CHECKPOINT_SECONDS, or as many came as fill an eighth of ``wal_max_bytes``
        (WalGuard.paced): the commit that makes it due wakes the writer. The size is checked each time the
        writer looks for work, and by inline commits every _WAL_CHECK_SECONDS (which then wake it).
        """
        commits = self._commits
        return (
            commits >= self._wal.checkpoint_commits
            or (commits > 0 and time.monotonic() - self._last_commit >= _CHECKPOINT_SECONDS)
            or self._wal.truncation_due()
        )

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE), so that the WAL starts over; truncate it
        (TRUNCATE) when it grew past its limit.

        The bulk is copied while inline commits go on. A WAL starts over (at its next commit) only
        once everything in it was copied, and under steady load inline commits always add some
        meanwhile (however complete the checkpoint says it was when it began): what they added is
        copied with them held off (they go to this thread's queue for that moment). Without that
        the WAL grew fast under load, for as long as the load lasted.
        """
        truncate = self._wal.truncation_due()
        try:
            connection = self._writer.connection.get()
            # A complete pass lets the next commit start the WAL over: pace by the commits after it.
            before = self._commits if checkpoint_wal(connection).complete else 0
            # Not the file's lock: a worker's checkpoint must not hold up intake in another process.
            with self._transaction_lock:
                # Once complete, the WAL starts over at the next commit: commits count from here.
                commits, self._commits = self._commits, 0
                done = checkpoint_wal(connection, truncate=truncate)
            complete = done.complete
            self._wal.paced(done.frames, commits - before, complete)
        except Exception as error:  # the next idle moment (or growth past the limit) tries again
            self._commits = 0
            self._writer.connection.drop()
            self._wal.failed(str(error), truncating=truncate)
            return
        finally:
            self._inline_paused = self._wal.full()
        if complete:
            self._wal.succeeded()
        elif truncate:
            self._wal.failed("readers or another process held it", truncating=truncate, blocked=True)

    def _count_commit(self) -> None:
        """Count a commit of the writer thread toward the next checkpoint (under the transaction lock)."""
        if self._counts_commits:
            self._commits += 1
            self._last_commit = time.monotonic()

    def _run_call(self, call: PendingCall) -> None:
        """Run one call in its own transaction(s) and fire its Deferred; never raises."""
        try:
            if (refusal := self._wal.refusal()) is not None:
                raise refusal
            with self._transaction_lock, self._holding_file():
                result = call.function(*call.args, **call.kwargs)
                self._count_commit()
        except Exception as error:  # whatever happens, the writer lives on to serve the next write
            failure = as_store_error(error, call.function.__name__)
            log.warn("store call {call} failed: {error}", call=call.function.__name__, error=str(failure))
            self._reactor.callFromThread(call.deferred.errback, failure)
            return
        self._reactor.callFromThread(call.deferred.callback, result)

    def _write(self, group: list[_PendingAdd], lane: _Lane) -> None:
        """Commit the group in one transaction and fire each add's Deferred; never raises."""
        if (refusal := self._wal.refusal()) is not None:
            self._reactor.callFromThread(fire, [(pending.deferred.errback, refusal) for pending in group])
            return
        try:
            with self._transaction_lock, self._holding_file():
                ids = self._insert_groups(
                    [(pending.messages, pending.source_file) for pending in group],
                    connection=lane.connection.get(),
                )
                self._count_commit()
        except Exception as error:  # whatever happens, the writer lives on to serve the next group
            # The connection may be what failed (a restarted server): the next group takes a new one.
            lane.connection.drop()
            failure = as_store_error(error, "storing messages")
            if len(group) > 1 and _may_be_one_add(failure):
                # One add's rows may be at fault: give every add its own transaction so the rest commit.
                for pending in group:
                    self._write([pending], lane)
                return
            if (groups := self._failure_lines.due()) is not None:  # a full disk fails every group
                log.warn(
                    "storing {count} messages failed ({groups} failed group(s) since the last such line,"
                    " this one included): {error}",
                    count=sum(len(p.messages) for p in group),
                    groups=groups,
                    error=str(failure),
                )
            self._reactor.callFromThread(fire, [(pending.deferred.errback, failure) for pending in group])
            return
        # One hand-off to the reactor per committed group, not one per add: each wakes the reactor.
        self._reactor.callFromThread(
            fire, [(pending.deferred.callback, pending_ids) for pending, pending_ids in zip(group, ids)]
        )

    def _stopped(self) -> None:
        self._state = State.STOPPED
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _take_adds(pending: collections.deque, max_batch: int) -> list[_PendingAdd]:
    """The adds at the head of ``pending`` (one at least) whose messages fit in max_batch, never split.

    Stops at a call: a file's adds never overtake a call queued before them (its file_moved may
    be what they rely on).
    """
    group = [pending.popleft()]
    size = len(group[0].messages)
    while pending and isinstance(pending[0], _PendingAdd) and size + len(pending[0].messages) <= max_batch:
        size += len(pending[0].messages)
        group.append(pending.popleft())
    return group


# What _next_work returns when the writer should checkpoint the WAL.
_CHECKPOINT = object()

# An add of more messages than this (a large batch) is never committed inline, on the reactor thread.
INLINE_MAX_MESSAGES = 64

# How long an inline group waits at most for connected senders to join it (see wait_for_senders).
GROUP_WAIT_SECONDS = 0.002

# The writer checkpoints the WAL that commits wrote once none came for this long...
_CHECKPOINT_SECONDS = 0.25
# ... or after as many of them as fill an eighth of wal_max_bytes (WalGuard.paced).
# Inline commits look at the WAL's size at most this often (at 100 MB/s, 200 KB between two looks).
_WAL_CHECK_SECONDS = 0.002
# A failing store (a full disk) fails every group: at most one warning about it this often.
FAILURE_LOG_SECONDS = 10.0


def _may_be_one_add(error: StoreError) -> bool:
    """Whether a failed group is worth retrying add by add: not if the database itself failed (transient)."""
    return not error.transient
