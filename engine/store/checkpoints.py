"""When and how the store file's WAL is checkpointed, on SQLite: commits counted, the writer copies.

No connection checkpoints as it commits (db.py). The store's commits, inline (on the reactor
thread) and the writer thread's, are counted; the writer thread checkpoints the WAL after as many
of them as write an eighth of ``wal_max_bytes`` (so that it starts over, written in place), or
once none came for a while, and truncates it once it has grown past half of ``wal_max_bytes``;
past two thirds the inline commits stop and the adds wait for the writer, which checkpoints first
(wal.py). A failed checkpoint is a warning, and the next idle moment, or the next growth past the
limit, tries again, so a store whose disk was full recovers as soon as there is space again.
The record's thread (record_lane.py) counts and paces its own file's checkpoints the same way
(``CommitCount``).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from engine.store.driver import checkpoint_wal
from engine.store.kept import KeptConnection
from engine.store.wal import WalGuard

# A WAL that commits wrote is checkpointed once none came for this long...
IDLE_CHECKPOINT_SECONDS = 0.25
# ... or after as many of them as fill an eighth of wal_max_bytes (WalGuard.paced).
# Inline commits look at the WAL's size at most this often (at 100 MB/s, 200 KB between two looks).
WAL_CHECK_SECONDS = 0.002


class CommitCount:
    """A WAL's commits since its last checkpoint, and whether the next is due: the store's, the record's."""

    def __init__(self, wal: WalGuard):
        self.wal = wal
        self._commits = 0  # since the last checkpoint
        self._last_commit = 0.0  # time.monotonic() of the last one

    def counted(self) -> None:
        """A commit was made (the store's: under the transaction lock, as ``StoreCheckpoints.run``)."""
        self._commits += 1
        self._last_commit = time.monotonic()

    def taken(self) -> int:
        """The commits counted, counting from zero again: a checkpoint begins."""
        commits, self._commits = self._commits, 0
        return commits

    def due(self) -> bool:
        """Whether to checkpoint: the WAL passed its limit, or commits wrote to it, and none
        came for a while or many did.

        None came for IDLE_CHECKPOINT_SECONDS, or as many came as fill an eighth of ``wal_max_bytes``
        (WalGuard.paced). The thread that checkpoints asks each time it looks for work; the store's
        inline commits wake its writer when they make it due, and look at the WAL's size every
        WAL_CHECK_SECONDS (``StoreCheckpoints.wake_writer``).
        """
        commits = self._commits
        return (
            commits >= self.wal.checkpoint_commits
            or (commits > 0 and time.monotonic() - self._last_commit >= IDLE_CHECKPOINT_SECONDS)
            or self.wal.truncation_due()
        )


class StoreCheckpoints(CommitCount):
    """The store file's commits (inline and the writer thread's), and the checkpoint the writer runs.

    ``transaction_lock`` is held by whichever thread is in a write transaction: commits are counted
    under it, and the last copy of a checkpoint holds it (see ``run``).
    """

    def __init__(self, wal: WalGuard, transaction_lock: AbstractContextManager):
        super().__init__(wal)
        self._transaction_lock = transaction_lock
        self.inline_paused = False  # the WAL is full: adds go to the writer, which checkpoints first
        self._wal_checked_at = 0.0  # time.monotonic() when an inline commit last looked at its size

    def wake_writer(self) -> bool:
        """After an inline commit: whether the writer should wake to checkpoint (``due`` says so now).

        A checkpoint's fsync may take long enough for inline commits to fill the WAL meanwhile, and
        a failed one must not let them fill the disk. A stat on every commit cost ~20 µs of CPU a
        message at 8 connections (it lets go of the GIL), hence at most one per WAL_CHECK_SECONDS.
        """
        wake = self._commits == self.wal.checkpoint_commits
        if (now := self._last_commit) - self._wal_checked_at >= WAL_CHECK_SECONDS:
            self._wal_checked_at = now
            size = self.wal.size()
            self.inline_paused = self.wal.full(size)
            wake = wake or self.inline_paused or self.wal.truncation_due(size)
        return wake

    def run(self, kept: KeptConnection) -> None:
        """Copy the WAL into the database file (PASSIVE), so that the WAL starts over; truncate it
        (TRUNCATE) when it grew past its limit. Never raises: a failure is noted (WalGuard.failed).

        The bulk is copied while inline commits go on. A WAL starts over (at its next commit) only
        once everything in it was copied, and under steady load inline commits always add some
        meanwhile (however complete the checkpoint says it was when it began): what they added is
        copied with them held off (they go to the writer's queue for that moment). Without that
        the WAL grew fast under load, for as long as the load lasted.
        """
        truncate = self.wal.truncation_due()
        try:
            connection = kept.get()
            # A complete pass lets the next commit start the WAL over: pace by the commits after it.
            before = self._commits if checkpoint_wal(connection).complete else 0
            # Not the file's lock: a worker's checkpoint must not hold up intake in another process.
            with self._transaction_lock:
                # Once complete, the WAL starts over at the next commit: commits count from here.
                commits = self.taken()
                done = checkpoint_wal(connection, truncate=truncate)
            complete = done.complete
            self.wal.paced(done.frames, commits - before, complete)
        except Exception as error:  # the next idle moment (or growth past the limit) tries again
            self.taken()
            kept.drop()
            self.wal.failed(str(error), truncating=truncate)
            return
        finally:
            self.inline_paused = self.wal.full()
        if complete:
            self.wal.succeeded()
        elif truncate:
            self.wal.failed("readers or another process held it", truncating=truncate, blocked=True)
