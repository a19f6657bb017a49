"""A writer thread of the store: its queues, intake's adds first, each group in one transaction.

``add()`` calls pending together are committed in one transaction (group commit); every write's
Deferred fires after COMMIT, on the reactor thread. Calls (``write()``: processing, attempts)
run in the order asked; the adds of received messages go ahead of the calls still queued, so a
sender's ACK waits at most for the one transaction running, which callers keep short. On SQLite
the store's writer thread also checkpoints the store file's WAL (checkpoints.py).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from engine.errors import StoreError
from engine.lograte import LogRate
from engine.model import NewMessage, SourceFile
from engine.store.calls import PendingCall, as_store_error, fire, run_call
from engine.store.checkpoints import IDLE_CHECKPOINT_SECONDS, StoreCheckpoints
from engine.store.kept import KeptConnection
from engine.store.wal import WalGuard

log = Logger(namespace="engine.store")

# What inserts groups of adds: MessageRepository.insert_groups.
InsertGroups = Callable[..., list[list[int]]]


@dataclass(slots=True)
class PendingAdd:
    """An add() waiting for a writer; adds next to each other in the queue share one transaction."""

    messages: tuple[NewMessage, ...]
    source_file: SourceFile | None
    deferred: defer.Deferred


class WriterLane:
    """One writer thread and its queues: a transaction at a time, intake's adds first.

    ``_intake`` holds the adds of received messages (no source file), in order; ``_pending`` every
    other write (calls, a file's adds), in order. Whenever adds wait in ``_intake``, they are
    committed (one group) before the next of ``_pending``: a sender's ACK never waits behind the
    downstream work queued before it (a record run, a round of attempts, processing), only for
    the one transaction running. After a group, a waiting call goes next, so calls are never
    starved by steady intake. No add relies on a call queued before it: a caller that needs a
    call's write first waits for its Deferred.
    """

    def __init__(
        self,
        name: str,
        connection: KeptConnection,
        *,
        reactor,
        insert_groups: InsertGroups,
        max_batch: int,
        wal: WalGuard,
        transaction_lock: AbstractContextManager,
        holding_file: Callable[[], AbstractContextManager],
        checkpoints: StoreCheckpoints | None,
        failure_lines: LogRate,
        finished: Callable[[], None],
    ):
        """Each transaction holds ``transaction_lock`` and ``holding_file()`` (the file's lock, if
        shared); ``checkpoints``, if any, are this thread's to run; ``finished()`` is called on the
        thread once it has stopped."""
        self.name = name
        self._connection = connection
        self._reactor = reactor
        self._insert_groups = insert_groups
        self._max_batch = max_batch
        self._wal = wal
        self._transaction_lock = transaction_lock
        self._holding_file = holding_file
        self._checkpoints = checkpoints
        self._failure_lines = failure_lines
        self._finished = finished
        self._intake: collections.deque[PendingAdd] = collections.deque()
        self._pending: collections.deque[PendingAdd | PendingCall] = collections.deque()
        self._last_was_intake = False  # the last work taken was a group of intake's adds
        self._stopping = False
        self._wakeup = threading.Condition()

    def start(self) -> None:
        """Start the thread."""
        threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def put(self, pending: PendingAdd | PendingCall) -> None:
        """Queue ``pending``: intake's adds in their own queue, every other write in order."""
        queue = (
            self._intake if isinstance(pending, PendingAdd) and pending.source_file is None else self._pending
        )
        with self._wakeup:
            queue.append(pending)
            self._wakeup.notify()

    def wake(self) -> None:
        """Wake the thread to look again whether a checkpoint is due."""
        with self._wakeup:
            self._wakeup.notify()

    def stop(self) -> None:
        """Commit the writes queued so far, then end the thread (and call ``finished``)."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()

    # Everything below runs on the thread.

    def _run(self) -> None:
        try:
            while (work := self._next()) is not None:
                if work is _CHECKPOINT:
                    self._checkpoints.run(self._connection)
                elif isinstance(work, PendingCall):
                    run_call(
                        work,
                        reactor=self._reactor,
                        wal=self._wal,
                        held=self._held,
                        ran=self._count_commit,
                        thread="store",
                    )
                else:
                    self._write(work)
            self._connection.drop()
        finally:
            self._finished()

    def _next(self) -> PendingCall | list[PendingAdd] | object | None:
        """Wait for work: intake's adds first (those that fit in max_batch, at least one), else the
        next call alone or the file adds at the head of the queue, _CHECKPOINT when due
        (StoreCheckpoints.due); None to exit.

        The checkpoint is returned rather than run here: the reactor takes this lock to queue work.
        """
        with self._wakeup:
            while True:
                # Senders wait for the adds queued: a checkpoint comes after them, unless the WAL
                # has grown past its limit (a PASSIVE pass took up to 50 ms on a busy machine).
                if (
                    self._checkpoints is not None
                    and self._checkpoints.due()
                    and not (self._intake and not self._checkpoints.wal.truncation_due())
                ):
                    return _CHECKPOINT
                if self._intake or self._pending or self._stopping:
                    break
                self._wakeup.wait(IDLE_CHECKPOINT_SECONDS)
            # Intake first, but a call waits for one group of adds at most: under steady intake the
            # writer alternates, so processing and delivery go on (a group takes every add queued).
            if self._intake and not (self._pending and self._last_was_intake):
                self._last_was_intake = True
                return take_adds(self._intake, self._max_batch)
            self._last_was_intake = False
            if not self._pending:
                return None
            if isinstance(self._pending[0], PendingCall):
                return self._pending.popleft()
            return take_adds(self._pending, self._max_batch)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The locks a write transaction holds: the transaction lock, then the file's."""
        with self._transaction_lock, self._holding_file():
            yield

    def _count_commit(self) -> None:
        """Count a commit toward the next checkpoint, if this thread checkpoints (under the lock)."""
        if self._checkpoints is not None:
            self._checkpoints.counted()

    def _write(self, group: list[PendingAdd]) -> None:
        """Commit the group in one transaction and fire each add's Deferred; never raises."""
        if (refusal := self._wal.refusal()) is not None:
            self._reactor.callFromThread(fire, [(pending.deferred.errback, refusal) for pending in group])
            return
        try:
            with self._held():
                ids = self._insert_groups(
                    [(pending.messages, pending.source_file) for pending in group],
                    connection=self._connection.get(),
                )
                self._count_commit()
        except Exception as error:  # whatever happens, the writer lives on to serve the next group
            # The connection may be what failed (a restarted server): the next group takes a new one.
            self._connection.drop()
            failure = as_store_error(error, "storing messages")
            if len(group) > 1 and _may_be_one_add(failure):
                # One add's rows may be at fault: give every add its own transaction so the rest commit.
                for pending in group:
                    self._write([pending])
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


def take_adds(pending: collections.deque, max_batch: int) -> list[PendingAdd]:
    """The adds at the head of ``pending`` (one at least) whose messages fit in max_batch, never split.

    Stops at a call: a file's adds never overtake a call queued before them (its file_moved may
    be what they rely on).
    """
    group = [pending.popleft()]
    size = len(group[0].messages)
    while pending and isinstance(pending[0], PendingAdd) and size + len(pending[0].messages) <= max_batch:
        size += len(pending[0].messages)
        group.append(pending.popleft())
    return group


# What _next returns when the writer should checkpoint the WAL.
_CHECKPOINT = object()


def _may_be_one_add(error: StoreError) -> bool:
    """Whether a failed group is worth retrying add by add: not if the database itself failed (transient)."""
    return not error.transient
