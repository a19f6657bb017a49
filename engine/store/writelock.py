"""Processes writing one SQLite file take turns at its write lock, handed over the moment it is free.

SQLite lets one connection write at a time. A connection that finds the lock taken waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10 ... 100 ms between tries: the lock sits free
while the waiter sleeps, and a process that commits chunk after chunk (the record in a worker
process) takes it again first, so the other (intake) waited hundreds of milliseconds. So the
``StorePool`` of each process that shares a SQLite file with others (``shared``) takes a
``WriterLock`` around each of its write transactions: an open-file-description lock
(``F_OFD_SETLK``) on byte 0 of a side file next to the database (``store.db-lock``). A waiter
sleeps in the kernel and wakes as soon as the holder lets go.

Fairness: a blocked taker first takes byte 1, the turnstile, and holds it until it has byte 0.
A holder that lets go and wants the lock again must pass the turnstile, which the waiter holds:
so two processes that both write steadily alternate, transaction by transaction: a taker goes at
once only when no one waits there. That holds for ``try_take`` too (the reactor's inline commit,
which never waits, and hands its adds to the writer thread when it cannot take the lock): when
intake went ahead of a waiting worker process, the worker's record applied 34 msg/s instead of
hundreds, its waiter woken each time only to find the lock taken again.

Precedence: the intake's process takes the lock ``ahead`` of the others (the delivery workers),
since its senders wait for its commits and the workers' writes (delivery states) can wait; the
record, which was starved above, has a file and a lock of its own, where no taker is ahead. A
taker ahead ignores the turnstile, and one that must wait holds byte 2, the turnstile of those
ahead, until it has byte 0; a taker behind passes byte 2 (a read lock, so that its passing never
stops a taker ahead) before it waits for byte 0, and does not take the lock, even free, while a
taker ahead waits. The workers still get the lock between intake's commits: the kernel wakes
their waiter as soon as it is free, and the reactor commits at most once a turn. Two takers ahead
(several intake processes) alternate at byte 2 as two behind do at the turnstile.

The kernel waits without a timeout, so the wait runs on a thread of the lock's own (``take``
waits for it at most ``timeout``, then raises ``StoreError(locked=True)`` as SQLite's busy
handler would). A wait given up on goes on in that thread, and the lock is let go at once when
it comes, unless another ``take`` asked for it meanwhile. A process that dies lets go of every
byte with its file descriptions. Writers that do not take the lock (the CLI's commands, the web
console's sessions) still wait in SQLite's busy handler: correct, only not woken at once.
The side file holds no data: it may be missing (it is made again), and it is not backed up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import time
from pathlib import Path

from engine.errors import StoreError

#: The bytes of the side file that are locked: the write lock itself, the turnstile, and the
#: turnstile of the takers ahead.
_WRITE = 0
_TURN = 1
_AHEAD = 2
_PRIVATE_FILE = 0o600


def side_file(database: Path) -> Path:
    """The lock's side file next to ``database`` (``store.db`` -> ``store.db-lock``)."""
    return database.with_name(database.name + "-lock")


class WriterLock:
    """The write lock of one SQLite file, shared by every process of the engine that writes it."""

    def __init__(self, database: Path, timeout: float, *, ahead: bool = False):
        """``ahead``: this process's writes go before those of the processes without it (see above)."""
        self.path = side_file(database)
        self._timeout = timeout
        self._ahead = ahead
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _PRIVATE_FILE)
        self._mutex = threading.Lock()  # the threads of this process, one at a time
        self._state = threading.Condition()
        self._wanted = False  # a take() waits for the waiting thread to get the lock
        self._granted = False  # the waiting thread got it for that take()
        self._waiting = False  # the waiting thread is in the kernel's wait
        self._closing = False
        self._waiter: threading.Thread | None = None

    def try_take(self) -> bool:
        """Take the lock if it is free now, never waiting; True if taken."""
        if not self._mutex.acquire(blocking=False):
            return False
        with self._state:
            if not self._waiting and self._take_in_turn():
                return True
        self._mutex.release()
        return False

    def take(self) -> None:
        """Take the lock, waiting for it at most ``timeout``; StoreError(locked=True) after that."""
        deadline = time.monotonic() + self._timeout
        if not self._mutex.acquire(timeout=self._timeout):
            raise _locked(self._timeout)
        with self._state:
            if not self._waiting and self._take_in_turn():
                return
            self._wanted = True
            if self._waiter is None:
                self._waiter = threading.Thread(
                    target=self._wait_for_turns, name="hl7engine-store-writer-lock", daemon=True
                )
                self._waiter.start()
            self._state.notify_all()
            while not self._granted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._wanted = False  # the waiting thread lets go of it once it gets it
                    self._mutex.release()
                    raise _locked(self._timeout)
                self._state.wait(remaining)
            self._granted = self._wanted = False

    @contextlib.contextmanager
    def held(self):
        """Hold the lock for a block (``take``), and let go of it after, whatever happens."""
        self.take()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the lock (taken by ``take`` or ``try_take``)."""
        _unlock(self._fd, _WRITE)
        self._mutex.release()

    def close(self) -> None:
        """Close the side file (once no thread holds the lock); a wait in progress closes it when done."""
        with self._state:
            self._closing = True
            self._state.notify_all()
            if not self._waiting:
                os.close(self._fd)

    def _take_in_turn(self) -> bool:
        """Take the lock now if it is free and no one waits before this taker; True if taken."""
        if self._ahead:  # only another process ahead that waits comes first
            return _free(self._fd, _AHEAD) and _lock(self._fd, _WRITE, wait=False)
        if not _lock(self._fd, _TURN, wait=False):
            return False
        try:
            return _free(self._fd, _AHEAD) and _lock(self._fd, _WRITE, wait=False)
        finally:
            _unlock(self._fd, _TURN)

    def _wait_in_turn(self) -> None:
        """Wait for the lock behind the takers that wait before this one, then take it."""
        if self._ahead:
            _lock(self._fd, _AHEAD, wait=True)
            _lock(self._fd, _WRITE, wait=True)
            _unlock(self._fd, _AHEAD)
            return
        _lock(self._fd, _TURN, wait=True)
        _lock(self._fd, _AHEAD, wait=True, shared=True)  # passes once no process ahead waits
        _unlock(self._fd, _AHEAD)
        _lock(self._fd, _WRITE, wait=True)
        _unlock(self._fd, _TURN)

    def _wait_for_turns(self) -> None:
        """The waiting thread: takes the turnstile, then the lock, for each take() that asks."""
        while True:
            with self._state:
                # Until a take() asks, and once it has been given the lock, until it has taken it.
                while (not self._wanted or self._granted) and not self._closing:
                    self._state.wait()
                if self._closing:
                    return
                self._waiting = True
            self._wait_in_turn()
            with self._state:
                self._waiting = False
                if self._wanted and not self._closing:
                    self._granted = True
                    self._state.notify_all()
                    continue
                _unlock(self._fd, _WRITE)  # given up on meanwhile
                if self._closing:
                    os.close(self._fd)
                    return


def _locked(timeout: float) -> StoreError:
    return StoreError(
        f"the store's write lock was held by another writer for more than {timeout:g}s", locked=True
    )


def _lock(fd: int, byte: int, *, wait: bool, shared: bool = False) -> bool:
    """Lock one byte of the side file for this file description; False if taken (without ``wait``).

    ``shared``: a read lock, which only the write locks of others exclude.
    """
    try:
        fcntl.fcntl(
            fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, (_SHARED if shared else _LOCKS)[byte]
        )
    except (BlockingIOError, PermissionError):  # EAGAIN, or EACCES as some systems say
        return False
    return True


def _free(fd: int, byte: int) -> bool:
    """Whether no other file description holds a write lock on the byte (it is only looked at)."""
    found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _SHARED[byte])
    return struct.unpack_from("@h", found)[0] == fcntl.F_UNLCK


def _unlock(fd: int, byte: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _UNLOCKS[byte])


def _flock(kind: int, byte: int) -> bytes:
    """A ``struct flock`` for one byte: type, whence, start, length, pid (0, as OFD locks need)."""
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, byte, 1, 0)


# Packed once: a commit takes and lets go of the lock, and packing cost as much as the system calls.
_LOCKS = {byte: _flock(fcntl.F_WRLCK, byte) for byte in (_WRITE, _TURN, _AHEAD)}
_SHARED = {byte: _flock(fcntl.F_RDLCK, byte) for byte in (_AHEAD,)}
_UNLOCKS = {byte: _flock(fcntl.F_UNLCK, byte) for byte in (_WRITE, _TURN, _AHEAD)}
