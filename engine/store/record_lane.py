"""The patient record's writer thread, on SQLite when the record has a file of its own.

The record's writes (its destination's chunks, the operator's merges and links) take only the
record file's write lock (engine.store.driver.record_attach), so they run here, beside the store's
writer: were they on it, the writer would hold its lane while waiting for the record's lock, and
intake's adds would wait behind. Calls run one at a time, in the order asked. The reactor's inline
commits never wait for this thread (it holds none of the store's own locks). With other processes
on the same files (``shared``), each call holds the record file's ``WriterLock`` (``<record
file>-lock``), never the store file's.

No connection checkpoints as it commits (db.py): this thread checkpoints the record's WAL
(``record.``, never every attached file), after as many calls as write an eighth of
``wal_max_bytes`` to it (``WalGuard.paced``: the WAL file keeps its size once grown, so its size
cannot say when) or once none came for a while, truncating it once it has grown past half; while
it is full and checkpoints fail (a full disk), its calls are refused, as the store's writer's are.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer

from engine.store.calls import PendingCall, run_call
from engine.store.checkpoints import IDLE_CHECKPOINT_SECONDS, CommitCount
from engine.store.driver import checkpoint_wal
from engine.store.driver.record_attach import RECORD_SCHEMA
from engine.store.kept import KeptConnection
from engine.store.wal import WalGuard
from engine.store.writelock import WriterLock

# What _next returns when the WAL should be checkpointed.
_CHECKPOINT = object()


class RecordLane:
    """One thread that runs the record's writes in order and checkpoints the record file's WAL."""

    def __init__(
        self,
        engine: sa.Engine,
        database: Path,
        *,
        reactor,
        wal_max_bytes: int,
        lock_timeout: float,
        shared: bool,
        finished: Callable[[], None],
    ):
        """``database`` is the record's file; ``finished()`` is called on the thread once it has stopped."""
        self._reactor = reactor
        self._connection = KeptConnection(engine)  # for the checkpoints: the calls take their own
        self._wal = WalGuard(database, wal_max_bytes)
        self._commits = CommitCount(self._wal)  # the calls since the last checkpoint
        self._lock = WriterLock(database, lock_timeout) if shared else None
        self._finished = finished
        self._pending: collections.deque[PendingCall] = collections.deque()
        self._wakeup = threading.Condition()
        self._stopping = False

    def start(self) -> None:
        """Start the thread."""
        threading.Thread(target=self._run, name="hl7engine-store-record", daemon=True).start()

    def write(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the thread, after the calls asked before it."""
        call = PendingCall(function, args, kwargs, defer.Deferred())
        with self._wakeup:
            self._pending.append(call)
            self._wakeup.notify()
        return call.deferred

    def stop(self) -> None:
        """Run the calls asked so far, then end the thread (and call ``finished``)."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()

    # Everything below runs on the thread.

    def _run(self) -> None:
        try:
            while (work := self._next()) is not None:
                if work is _CHECKPOINT:
                    self._checkpoint()
                else:
                    run_call(
                        work,
                        reactor=self._reactor,
                        wal=self._wal,
                        held=self._lock.held if self._lock is not None else contextlib.nullcontext,
                        ran=self._commits.counted,
                        thread="record",
                    )
            self._connection.drop()
            if self._lock is not None:
                self._lock.close()
        finally:
            self._finished()

    def _next(self) -> PendingCall | object | None:
        with self._wakeup:
            while True:
                if self._commits.due():
                    return _CHECKPOINT
                if self._pending:
                    return self._pending.popleft()
                if self._stopping:
                    return None
                self._wakeup.wait(IDLE_CHECKPOINT_SECONDS)

    def _checkpoint(self) -> None:
        """Copy the record's WAL into its file (PASSIVE), truncating it once past half its limit."""
        truncate = self._wal.truncation_due()
        commits = self._commits.taken()
        try:
            with self._lock.held() if self._lock is not None and truncate else contextlib.nullcontext():
                done = checkpoint_wal(self._connection.get(), truncate=truncate, schema=RECORD_SCHEMA)
        except Exception as error:  # the next idle moment (or growth past the limit) tries again
            self._connection.drop()
            self._wal.failed(str(error), truncating=truncate)
            return
        self._wal.paced(done.frames, commits, done.complete)
        if done.complete:
            self._wal.succeeded()
        elif truncate:
            self._wal.failed("readers or another process held it", truncating=truncate, blocked=True)
