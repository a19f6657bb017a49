"""Keeping a SQLite store's WAL small: when to truncate it, and telling the operator when checkpoints fail.

Under full-speed load the WAL grows by tens of megabytes a second; a checkpoint copies it into
the database file and lets it start over, but the file keeps its size unless truncated. On a
small disk the WAL then filled the disk, and the store could not write again even once space was
freed. So the store's writer truncates the WAL (``wal_checkpoint(TRUNCATE)``) as soon as it has
grown past half of ``wal_max_bytes``; past two thirds (a checkpoint's fsync can take a while)
inline commits stop until the checkpoint is done, leaving room for the group being committed;
and every connection truncates it to ``wal_max_bytes`` whenever it starts over
(``journal_size_limit``, db.py).

A checkpoint fails when the database file cannot grow (the disk is full). Writes then go on
failing, and the moment space is freed, commits would take it for the WAL (a checkpoint only
comes a little later), fill the disk again, and leave no room for the database file to grow:
the store never recovered. So while the WAL is past two thirds of its limit and the last
checkpoint failed, the writer refuses writes (``refusal``) until a checkpoint succeeds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from twisted.logger import Logger

from engine.errors import StoreError
from engine.lograte import LogRate

log = Logger(namespace="engine.store")

# A failed checkpoint is a warning at most this often (each one says how many failed meanwhile).
WARNING_INTERVAL_SECONDS = 60.0
# After a failed checkpoint, the WAL's size makes the next one due only after this long: the writer
# must go on answering writes (with errors, while the disk is full) rather than retry at once forever.
RETRY_SECONDS = 0.25
# Inline commits between two checkpoints under steady load, whatever they write (WalGuard.paced).
MIN_CHECKPOINT_COMMITS = 16
MAX_CHECKPOINT_COMMITS = 500
# A WAL frame: a page (SQLite's default size, which the store keeps) and its 24-byte header.
FRAME_BYTES = 4096 + 24


class WalGuard:
    """Watches one SQLite database's WAL file for size, and checkpoints for failures."""

    def __init__(
        self,
        database: Path | None,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._wal = None if database is None else database.with_name(database.name + "-wal")
        self._max_bytes = max_bytes
        self._clock = clock
        self._warnings = LogRate(WARNING_INTERVAL_SECONDS, clock)
        self._failing = False  # since the last success (for the info line)
        self._erring = False  # the last checkpoint raised an error (a full disk): writes are refused
        self._retry_at = float("-inf")
        self.checkpoint_commits = MIN_CHECKPOINT_COMMITS  # inline commits that make a checkpoint due (paced)
        self._restarted = False  # the last checkpoint was complete: the WAL started over since

    def paced(self, frames: int, commits: int, complete: bool) -> None:
        """Learn how many inline commits to checkpoint after: as many as write an eighth of ``max_bytes``.

        A checkpoint found ``frames`` in the WAL after ``commits`` inline commits, counted since the
        last checkpoint, which ``complete`` says of this one. The WAL starts over at the first commit
        after a complete checkpoint and is then written over in place; one that grew past half the
        limit is truncated to nothing, and growing it again cost more CPU a message than the commit
        itself (the file system zeroes and allocates every new block), so it is checkpointed long
        before that. A group of eight messages writes about twice the pages of a single one: hence
        a count learnt, not fixed. After an incomplete checkpoint the WAL went on, and the next
        count says nothing about it.
        """
        if self._restarted and commits > 0 and frames > 0:
            wanted = self._max_bytes // 8 // FRAME_BYTES * commits // frames
            self.checkpoint_commits = max(MIN_CHECKPOINT_COMMITS, min(MAX_CHECKPOINT_COMMITS, wanted))
        self._restarted = complete

    def truncation_due(self, size: int | None = None) -> bool:
        """Whether the WAL file (``size`` bytes, or as it is now) has grown past half of ``wal_max_bytes``.

        False without a file to watch, and for RETRY_SECONDS after a failed checkpoint.
        """
        if self._clock() < self._retry_at:
            return False
        return (self.size() if size is None else size) > self._max_bytes // 2

    def full(self, size: int | None = None) -> bool:
        """Whether the WAL file (``size`` bytes, or as it is now) has grown past two thirds of
        ``wal_max_bytes`` (False without one).

        The last third is room for the commits on their way while the checkpoint runs.
        """
        return (self.size() if size is None else size) > self._max_bytes * 2 // 3

    def size(self) -> int:
        """The WAL file's size in bytes (0 without one): a stat."""
        if self._wal is None:
            return 0
        try:
            return os.stat(self._wal).st_size
        except FileNotFoundError:
            return 0

    def failed(self, reason: str, *, truncating: bool, blocked: bool = False) -> None:
        """A checkpoint failed: a warning now, unless one was given in the last WARNING_INTERVAL_SECONDS.

        ``blocked``: readers held it back (it raised no error); writes are not refused for that, as
        a reader soon lets go, whereas a full disk stays full.
        """
        self._failing = True
        self._erring = not blocked
        self._retry_at = self._clock() + RETRY_SECONDS
        if (failures := self._warnings.due()) is None:
            return
        log.warn(
            "checkpointing the store's WAL failed {failures} time(s) since the last warning"
            " (truncating: {truncating}): {reason}; retried every {retry}s, and messages are refused"
            " (AR) while the WAL is full",
            failures=failures,
            truncating=truncating,
            reason=reason,
            retry=RETRY_SECONDS,
        )

    def refusal(self) -> StoreError | None:
        """Why a write must not grow the WAL now (it is full and checkpoints fail), or None."""
        if self._erring and self.full():
            return StoreError(
                "the store's WAL is full and cannot be checkpointed (is the disk full?)", transient=True
            )
        return None

    def succeeded(self) -> None:
        """A checkpoint completed: say so once if they had been failing."""
        self._erring = False
        if self._failing:
            self._failing = False
            log.info("checkpointing the store's WAL works again")
