"""engine.store.writelock: processes writing one SQLite file take turns, and the lock never outlives its use.

A second ``WriterLock`` on the same file in this process stands for another process: the lock is
held by an open file description, so two of them exclude each other as two processes do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twisted.internet import defer

from engine.errors import StoreError
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.schema import messages
from engine.store.writelock import WriterLock, side_file
from tests.fakes.store import commit_threads, later, queued

PROJECT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 30  # the longest any wait below may last before the test fails

# Takes the lock ROUNDS times and, holding it, adds one to a counter in a plain file (read, then write):
# two of them lose increments unless the lock excludes the other process.
COUNTER = """
import sys
from pathlib import Path
from engine.store.writelock import WriterLock

database, counter = Path(sys.argv[1]), Path(sys.argv[2])
lock = WriterLock(database, timeout=30, ahead=sys.argv[4] == "ahead")
for round_ in range(int(sys.argv[3])):
    if round_ % 3 or not lock.try_take():
        lock.take()
    counter.write_text(str(int(counter.read_text()) + 1))
    lock.release()
lock.close()
"""

# A MessageStore adding messages both inline (one a turn) and on the writer thread (a large batch),
# and a call on the writer thread; prints how many it stored, then stops.
STORE_WRITER = """
import sys
from datetime import datetime, timezone
from twisted.internet import defer, reactor
from engine.model import NewMessage, Status
from engine.store.message_store import MessageStore

store = MessageStore(sys.argv[1], reactor=reactor, shared=True)
store.start()

def message(n):
    return NewMessage(raw=b"MSH|^~\\\\&|LOCK|%d\\r" % n, received_at=datetime.now(timezone.utc),
                      listener=sys.argv[2], peer="test", status=Status.RECEIVED, control_id=str(n))

@defer.inlineCallbacks
def run():
    stored = 0
    for round_ in range(40):
        ids = yield store.add([message(round_)])
        stored += len(ids)
        if round_ % 8 == 0:
            ids = yield store.add([message(1000 + round_ * 100 + n) for n in range(70)])
            stored += len(ids)
            yield store.write(lambda: None)
    print(stored, flush=True)
    yield store.stop()
    reactor.stop()

reactor.callWhenRunning(run)
reactor.run()
"""

# Locks one byte of the side file (argv[2]) as a taker waiting there would, says so, and holds it
# until killed: the turnstile (1) for a process behind that waits, 2 for a process ahead that waits.
BYTE_HOLDER = """
import fcntl, os, struct, sys, time
from engine.store.writelock import side_file
from pathlib import Path

fd = os.open(side_file(Path(sys.argv[1])), os.O_RDWR | os.O_CREAT, 0o600)
lock = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, int(sys.argv[2]), 1, 0)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
print("held", flush=True)
time.sleep(120)
"""

# Takes the lock, says so, and holds it until killed.
HOLDER = """
import sys, time
from pathlib import Path
from engine.store.writelock import WriterLock

WriterLock(Path(sys.argv[1]), timeout=30).take()
print("held", flush=True)
time.sleep(120)
"""


def _python(script: str, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=PROJECT
    )


def _finished(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 0, err.decode(errors="replace")
    return out.decode() if out else ""


@pytest.fixture
def database(sqlite_url) -> Path:
    """The test's SQLite file (the one ``open_sqlite_store`` opens), its folder made."""
    path = Path(make_url(sqlite_url).database)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def other(database):
    """The lock as another process would take it (its own file description), closed after the test."""
    lock = WriterLock(database, timeout=WAIT_SECONDS)
    yield lock
    lock.close()


def _turnstile_taken(path: Path) -> bool:
    """Whether any file description holds the turnstile (a taker waits for the lock)."""
    fd = os.open(path, os.O_RDWR)
    try:
        probe = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 1, 1, 0)
        kind = struct.unpack("@hhqqi4x", fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe))[0]
    finally:
        os.close(fd)
    return kind != fcntl.F_UNLCK


def test_the_side_file_sits_next_to_the_database_and_is_private(database, other):
    """``messages.db`` gets ``messages.db-lock`` beside it, readable by the engine's user only."""
    assert side_file(database) == database.with_name("messages.db-lock")
    assert other.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("classes", [("behind", "behind"), ("ahead", "behind"), ("ahead", "ahead")])
def test_two_processes_never_hold_the_lock_at_once(database, tmp_path, classes):
    """Two processes that read-modify-write a counter under the lock lose no increment, and both
    finish, one of them ahead or not."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    processes = [_python(COUNTER, str(database), str(counter), "300", kind) for kind in classes]
    for process in processes:
        _finished(process)
    assert counter.read_text() == "600"


def test_two_processes_writing_one_file_through_the_lanes_both_complete(sqlite_url):
    """Two MessageStores on one file, inline and on their writers, store everything they were given."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)  # the schema exists before the two start
    processes = [_python(STORE_WRITER, sqlite_url, f"p{n}") for n in range(2)]
    stored = [int(_finished(process)) for process in processes]
    with engine.connect() as connection:
        counts = {
            listener: count
            for listener, count in connection.execute(
                sa.select(messages.c.listener, sa.func.count()).group_by(messages.c.listener)
            )
        }
    engine.dispose()
    assert stored == [40 + 5 * 70] * 2
    assert counts == {"p0": stored[0], "p1": stored[1]}


def test_a_killed_holder_lets_go(database, other):
    """SIGKILL of the process holding the lock frees it for the others."""
    holder = _python(HOLDER, str(database))
    try:
        assert holder.stdout.readline() == b"held\n", holder.stderr.read().decode(errors="replace")
        assert not other.try_take()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=WAIT_SECONDS)
        other.take()
        other.release()
    finally:
        holder.kill()
        holder.wait(timeout=WAIT_SECONDS)
        holder.stdout.close()
        holder.stderr.close()


@pytest.mark.parametrize("again", ["take", "try_take"])
def test_a_waiting_taker_goes_before_the_holder_takes_again(database, other, again):
    """Once a taker waits, the holder that lets go and takes again (or tries to) comes after it."""
    holder = WriterLock(database, timeout=WAIT_SECONDS)
    order: list[str] = []

    def take(lock: WriterLock, name: str) -> None:
        if name == "holder" and again == "try_take":
            deadline = time.monotonic() + WAIT_SECONDS
            while not lock.try_take() and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            lock.take()
        order.append(name)
        lock.release()

    holder.take()
    waiter = threading.Thread(target=take, args=(other, "waiter"))
    waiter.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while not _turnstile_taken(holder.path) and time.monotonic() < deadline:
        time.sleep(0.001)
    holder.release()
    take(holder, "holder")
    waiter.join(timeout=WAIT_SECONDS)
    holder.close()
    assert order == ["waiter", "holder"]


@contextlib.contextmanager
def _byte_held(database: Path, byte: int):
    """Another process holds one byte of the side file (as a taker waiting there) for the block."""
    holder = _python(BYTE_HOLDER, str(database), str(byte))
    try:
        assert holder.stdout.readline() == b"held\n", holder.stderr.read().decode(errors="replace")
        yield
    finally:
        holder.kill()
        holder.wait(timeout=WAIT_SECONDS)
        holder.stdout.close()
        holder.stderr.close()


def test_a_taker_ahead_does_not_wait_for_the_takers_behind(database, other):
    """While another process behind waits at the turnstile, a taker ahead takes the free lock at once;
    one behind does not."""
    ahead = WriterLock(database, timeout=WAIT_SECONDS, ahead=True)
    try:
        with _byte_held(database, 1):
            assert not other.try_take()
            assert ahead.try_take()
            ahead.release()
            ahead.take()
            ahead.release()
        assert other.try_take()
        other.release()
    finally:
        ahead.close()


def test_the_takers_behind_wait_for_a_taker_ahead_that_waits(database, other):
    """While another process ahead waits for the lock, a taker behind does not take it, even free;
    it takes it once that one no longer waits."""
    impatient = WriterLock(database, timeout=0.05)
    ahead = WriterLock(database, timeout=WAIT_SECONDS, ahead=True)
    try:
        with _byte_held(database, 2):
            assert not other.try_take()
            with pytest.raises(StoreError) as failed:
                impatient.take()
            assert failed.value.locked
            assert not ahead.try_take()  # one ahead that waits comes first among those ahead too
        other.take()
        other.release()
    finally:
        impatient.close()
        ahead.close()


def test_a_take_given_up_on_lets_go_once_it_gets_the_lock(database, other):
    """take() raises StoreError(locked=True) after its timeout; the lock it got later is let go at once."""
    impatient = WriterLock(database, timeout=0.05)
    other.take()
    with pytest.raises(StoreError) as failed:
        impatient.take()
    assert failed.value.locked
    other.release()
    third = WriterLock(database, timeout=WAIT_SECONDS)
    third.take()  # would time out if the given-up wait kept the lock
    third.release()
    third.close()
    impatient.close()


@pytest_twisted.inlineCallbacks
def test_a_failed_call_lets_go_of_the_lock(open_sqlite_store, other):
    """A write call that raises releases the file's lock: another process takes it at once."""
    store = open_sqlite_store(shared=True)

    def fail():
        raise ValueError("no")

    with pytest.raises(StoreError):
        yield store.write(fail)
    assert other.try_take()
    other.release()


@pytest_twisted.inlineCallbacks
def test_lock_timeout_is_reported_while_another_process_holds_the_lock(
    open_sqlite_store, other, make_message
):
    """Adds and calls fail with StoreError(locked=True) after lock_timeout; once free, they work."""
    store = open_sqlite_store(lock_timeout=0.2, shared=True)
    [message_id] = yield store.add([make_message(0)])
    other.take()
    failures = []
    for write in (
        lambda: store.add([make_message(1)]),
        lambda: store.record_processing([queued(message_id, "lab")]),
    ):
        try:
            yield write()
        except StoreError as error:
            failures.append(error.locked)
    other.release()
    assert failures == [True, True]
    assert len((yield store.record_processing([queued(message_id, "lab")]))) == 1


@pytest_twisted.inlineCallbacks
def test_the_inline_commit_goes_to_the_writer_while_another_process_holds_the_lock(
    open_sqlite_store, other, make_message
):
    """The reactor does not commit while another process holds the lock; the writer does, once it is free."""
    store = open_sqlite_store(shared=True)
    threads = commit_threads(store.repository.engine)
    other.take()
    adds = [store.add([make_message(n)]) for n in range(3)]
    yield later(0.3, other.release)
    results = yield defer.gatherResults(adds)
    assert threads == ["hl7engine-store-writer"]
    assert [store.repository.get(ids[0]).control_id for ids in results] == ["C0", "C1", "C2"]


@pytest_twisted.inlineCallbacks
def test_a_store_ahead_commits_inline_while_a_process_behind_waits(open_sqlite_store, database, make_message):
    """The store of the intake's process (``ahead``) commits on the reactor while a worker waits."""
    ahead = open_sqlite_store(shared=True, ahead=True)
    threads = commit_threads(ahead.repository.engine)
    with _byte_held(database, 1):
        ids = yield ahead.add([make_message(0)])
    assert threads == ["MainThread"]
    assert ahead.repository.get(ids[0]).control_id == "C0"


@pytest_twisted.inlineCallbacks
def test_a_store_no_other_process_writes_takes_no_turns(open_sqlite_store, other, make_message):
    """Without ``shared`` (one process alone) the store never looks at the side lock: it commits inline."""
    store = open_sqlite_store()
    threads = commit_threads(store.repository.engine)
    other.take()
    try:
        yield store.add([make_message(0)])
    finally:
        other.release()
    assert threads == ["MainThread"]
