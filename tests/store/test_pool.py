"""engine.store.pool (and writer_lane, checkpoints): group commit, inline commits and checkpoints,
the writer's order and survival.

Driven through MessageStore (the pool's face), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer

from engine.errors import StoreError
from engine.model import SourceFile
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.pool import GROUP_WAIT_SECONDS
from engine.store.reads import MessageQuery
from engine.store.wal import MIN_CHECKPOINT_COMMITS
from tests.fakes.messages import T0
from tests.fakes.reactor import ClockedReactor
from tests.fakes.store import commit_threads, expected_message, later, queued, source_file_rows

# Group commit: adds asked together share a transaction; calls run alone, in order.


@pytest_twisted.inlineCallbacks
def test_add_fires_after_commit(open_store, store_url, make_message):
    """add() fires with the ids only when another connection can already see the rows."""
    store = open_store()
    observer = MessageRepository(create_engine_for(store_url))
    seen = []

    def look(ids):
        seen.extend(observer.get(i) for i in ids)
        return ids

    news = [make_message(0), make_message(1)]
    ids = yield store.add(news).addCallback(look)
    observer.engine.dispose()
    assert seen == [expected_message(i, new) for i, new in zip(ids, news)]


@pytest_twisted.inlineCallbacks
def test_add_fires_on_the_reactor_thread(open_store, make_message):
    """The Deferred of add() fires on the reactor thread, not the writer's."""
    store = open_store()
    threads = []
    yield store.add([make_message(0)]).addCallback(lambda ids: threads.append(threading.current_thread()))
    assert threads == [threading.main_thread()]


@pytest_twisted.inlineCallbacks
def test_concurrent_adds_share_transactions(open_store, write_lock, make_message):
    """Adds made while the writer is busy are committed together, and each gets its own ids in order."""
    store = open_store()
    commits = commit_threads(store.repository.engine)
    write_lock.hold()
    adds = [[make_message(100 * a + n) for n in range(1 + a % 3)] for a in range(50)]
    deferreds = [store.add(news) for news in adds]
    yield later(0.3, write_lock.release)
    results = yield defer.gatherResults(deferreds)
    assert 1 <= len(commits) <= 2
    for news, ids in zip(adds, results):
        assert len(ids) == len(news) and ids == sorted(ids)
        assert [store.repository.get(i).control_id for i in ids] == [m.control_id for m in news]
    all_ids = [i for ids in results for i in ids]
    assert all_ids == sorted(all_ids) and len(set(all_ids)) == len(all_ids)


@pytest_twisted.inlineCallbacks
def test_max_batch_caps_a_transaction(open_store, write_lock, make_message):
    """No transaction holds more than max_batch messages, but one add is never split."""
    store = open_store(max_batch=4)
    commits = commit_threads(store.repository.engine)
    write_lock.hold()
    deferreds = [store.add([make_message(n)]) for n in range(12)] + [
        store.add([make_message(100 + n) for n in range(6)])
    ]
    yield later(0.3, write_lock.release)
    results = yield defer.gatherResults(deferreds)
    assert len(commits) >= 4
    assert len(results[-1]) == 6
    assert store.repository.count() == 18


@pytest_twisted.inlineCallbacks
def test_lock_fails_add_and_writer_survives(open_store, write_lock, make_message):
    """A lock held past lock_timeout fails add() with StoreError(locked=True); the next add() succeeds."""
    store = open_store(lock_timeout=0.2)
    write_lock.hold()
    with pytest.raises(StoreError) as failed:
        yield store.add([make_message(0)])
    write_lock.release()
    assert failed.value.locked
    ids = yield store.add([make_message(1)])
    assert (yield store.get(ids[0])).control_id == "C1"
    assert (yield store.count()) == 1


@pytest_twisted.inlineCallbacks
def test_bad_add_fails_alone(open_store, write_lock, make_message):
    """An add whose rows cannot be written fails (not locked) while the adds grouped with it commit."""
    store = open_store()
    write_lock.hold()
    first = store.add([make_message(0)])
    good = store.add([make_message(1), make_message(2)])
    bad = store.add([make_message(3), make_message(4, received_at=datetime(2024, 3, 1, 12, 0))])
    also_good = store.add([make_message(5)])
    yield later(0.3, write_lock.release)
    yield first
    with pytest.raises(StoreError) as failed:
        yield bad
    assert not failed.value.locked
    good_ids, also_good_ids = yield defer.gatherResults([good, also_good])
    stored = yield store.search(MessageQuery())
    assert [s.control_id for s in stored] == ["C5", "C2", "C1", "C0"]
    assert [s.id for s in stored[:3]] == also_good_ids + good_ids[::-1]


@pytest_twisted.inlineCallbacks
def test_stop_commits_pending_adds(open_store, store_url, write_lock, make_message):
    """stop() fires only after every add() made before it has committed."""
    store = open_store()
    write_lock.hold()
    deferreds = [store.add([make_message(n)]) for n in range(10)]
    stopped = store.stop()
    assert not stopped.called
    yield later(0.3, write_lock.release)
    yield stopped
    assert all(d.called for d in deferreds)
    results = yield defer.gatherResults(deferreds)
    observer = MessageRepository(create_engine_for(store_url))
    assert [observer.get(ids[0]).control_id for ids in results] == [f"C{n}" for n in range(10)]
    observer.engine.dispose()


@pytest_twisted.inlineCallbacks
def test_stopped_store_refuses_work(open_store, make_message):
    """After stop(), add() and reads fail with StoreError; stop() again fires at once."""
    store = open_store()
    yield store.stop()
    for attempt in (store.add([make_message(0)]), store.search(MessageQuery()), store.get(1), store.count()):
        with pytest.raises(StoreError):
            yield attempt
    assert (yield store.stop()) is None


@pytest_twisted.inlineCallbacks
def test_grouped_adds_each_record_their_source_file(open_store, write_lock, make_message):
    """Adds with source files in one group record each file with its count; a failing add loses its own."""
    store = open_store()
    commits = commit_threads(store.repository.engine)
    write_lock.hold()
    first = store.add([make_message(0)])
    files = [SourceFile(f"/in/{n}.hl7", f"{n}" * 64, n, 1_700_000_000_000_000_000) for n in range(1, 4)]
    good = store.add([make_message(1), make_message(2)], source_file=files[0])
    bad = store.add([make_message(3, received_at=datetime(2024, 3, 1, 12, 0))], source_file=files[1])
    empty = store.add([], source_file=files[2])
    yield later(0.3, write_lock.release)
    yield first
    with pytest.raises(StoreError):
        yield bad
    good_ids, empty_ids = yield defer.gatherResults([good, empty])
    assert (len(good_ids), empty_ids) == (2, [])
    assert (
        len(commits) == 1 + 2
    )  # the first add alone; then the failed group, retried add by add: good and empty commit
    assert source_file_rows(store.repository.engine) == [
        ("/in/1.hl7", "1" * 64, 1, 2),
        ("/in/3.hl7", "3" * 64, 3, 0),
    ]
    assert (yield store.unmoved_file("/in/1.hl7", 1, files[0].modified_ns))
    assert not (yield store.unmoved_file("/in/2.hl7", 2, files[1].modified_ns))


@pytest_twisted.inlineCallbacks
def test_writes_run_in_the_order_asked(open_store, backend, write_lock, make_message):
    """Calls keep their order; adds keep theirs and never wait behind queued calls.

    On SQLite the adds go ahead of the calls queued (the later two share a commit, with the first
    too when the writer had not taken it yet); on PostgreSQL they go beside, all three in one.
    """
    store = open_store()
    [first] = yield store.add([make_message(0)])
    yield store.record_processing([queued(first, "lab")])
    commits = commit_threads(store.repository.engine)
    write_lock.hold()
    before = store.add([make_message(1)])
    reprocessed = store.reprocess([first])
    # Only correct after the reprocess: the message must be RECEIVED again.
    processed = store.record_processing([queued(first, "lab")])
    after = [store.add([make_message(n)]) for n in (2, 3)]
    yield later(0.3, write_lock.release)
    results = yield defer.gatherResults([before, reprocessed, processed, *after])
    assert results[1] == 1 and len(results[2]) == 1
    assert len(commits) in ((3, 4) if backend == "sqlite" else (3,))
    assert results[0][0] < results[3][0] < results[4][0]
    assert (yield store.queue_depth("adt", "lab")) == 1


@pytest_twisted.inlineCallbacks
def test_add_then_record_processing_without_waiting_for_reads(open_store, make_message):
    """Each add is followed at once by recording its processing; every result lands, none is skipped."""
    store = open_store()
    recorded = []
    for n in range(20):
        d = store.add([make_message(n)])
        d.addCallback(lambda ids: store.record_processing([queued(ids[0], "lab")]))
        recorded.append(d)
    results = yield defer.gatherResults(recorded)
    assert all(len(ids) == 1 for ids in results)
    assert (yield store.queue_depth("adt", "lab")) == 20


@pytest_twisted.inlineCallbacks
def test_stop_runs_the_calls_already_asked_for(open_store, store_url, write_lock, make_message):
    """stop() fires only after queued calls committed; calls after it fail with StoreError."""
    store = open_store()
    [message_id] = yield store.add([make_message(0)])
    write_lock.hold()
    processed = store.record_processing([queued(message_id, "lab")])
    recorded = store.record_config(
        applied_at=T0, source="channels.yaml", content="x", sha256="0" * 64, changes="first"
    )
    stopped = store.stop()
    yield later(0.3, write_lock.release)
    yield stopped
    assert processed.called and recorded.called
    assert len((yield processed)) == 1 and isinstance((yield recorded), int)
    for attempt in (
        store.record_processing([]),
        store.resend([message_id]),
        store.reprocess([message_id]),
        store.queue_depths(),
        store.pending_for_processing("adt"),
    ):
        with pytest.raises(StoreError):
            yield attempt


@pytest_twisted.inlineCallbacks
def test_failed_calls_are_store_errors_and_the_writer_survives(open_store, make_message):
    """A call or read that fails, for any reason, fails its Deferred with StoreError; the next write works."""
    store = open_store()
    with pytest.raises(StoreError):
        yield store.record_config(
            applied_at=datetime(2024, 1, 1), source="s", content="c", sha256="0", changes=""
        )
    with pytest.raises(StoreError):
        yield store.due_deliveries("adt", "lab", now=datetime(2024, 1, 1), limit=1, head_only=True)
    [message_id] = yield store.add([make_message(0)])
    assert len((yield store.record_processing([queued(message_id, "lab")]))) == 1


@pytest_twisted.inlineCallbacks
def test_lock_timeout_fails_a_call_as_locked(open_store, write_lock, make_message):
    """A write lock held past lock_timeout fails a queued call with StoreError(locked=True)."""
    store = open_store(lock_timeout=0.2)
    [message_id] = yield store.add([make_message(0)])
    write_lock.hold()
    with pytest.raises(StoreError) as failed:
        yield store.record_processing([queued(message_id, "lab")])
    write_lock.release()
    assert failed.value.locked
    assert len((yield store.record_processing([queued(message_id, "lab")]))) == 1


# Inline commits: SQLite with durability process commits a reactor turn's adds on the reactor thread.


# The thread that commits adds that do not commit inline: on PostgreSQL a writer thread of their own.
_ADDS_THREAD = {"sqlite": "hl7engine-store-writer", "postgresql": "hl7engine-store-adds"}


@pytest_twisted.inlineCallbacks
def test_adds_of_one_reactor_turn_commit_together_on_the_reactor_thread(open_store, backend, make_message):
    """On SQLite (durability process) a turn's adds share a commit made on the reactor thread: no hop."""
    store = open_store()
    threads = commit_threads(store.repository.engine)
    results = yield defer.gatherResults([store.add([make_message(n)]) for n in range(5)])
    assert threads == ["MainThread" if backend == "sqlite" else _ADDS_THREAD[backend]]
    ids = [i for ids in results for i in ids]
    assert ids == sorted(ids) and [store.repository.get(i).control_id for i in ids] == [
        f"C{n}" for n in range(5)
    ]


@pytest_twisted.inlineCallbacks
def test_adds_wait_behind_a_running_call_only_on_sqlite(open_store, backend, make_message):
    """SQLite has one writer, so an add commits after the running call; PostgreSQL commits it beside."""
    store = open_store()
    release = threading.Event()
    call = store.write(release.wait, 10)
    yield later(0.1, lambda: None)  # the call is running
    add = store.add([make_message(0)])
    yield later(0.3, lambda: None)
    assert add.called == (backend != "sqlite")
    release.set()
    assert (yield call) is True
    [message_id] = yield add
    assert store.repository.get(message_id).control_id == "C0"


@pytest_twisted.inlineCallbacks
def test_a_received_message_commits_ahead_of_the_calls_queued_before_it(open_store, make_message):
    """An add asked while calls wait behind a running one commits before those calls run.

    Its sender's ACK waits for the running transaction only, not for the downstream work queued.
    """
    store = open_store()
    yield store.add([make_message(0)])
    release = threading.Event()
    running = store.write(release.wait, 10)
    yield later(0.1, lambda: None)  # the call is running
    queued_calls = [store.write(store.repository.count) for _ in range(3)]
    add = store.add([make_message(1)])
    yield later(0.1, release.set)
    counts = yield defer.gatherResults([running, *queued_calls])
    [message_id] = yield add
    assert counts == [True, 2, 2, 2]
    assert store.repository.get(message_id).control_id == "C1"


@pytest_twisted.inlineCallbacks
def test_a_call_waits_for_one_group_of_adds_at_most(open_store, backend, write_lock, make_message):
    """After a group of adds the writer takes a waiting call before the adds queued meanwhile.

    Steady intake never starves processing and delivery (on SQLite, where they share the writer).
    """
    if backend != "sqlite":
        pytest.skip("on PostgreSQL the adds have a writer of their own")
    store = open_store()
    write_lock.hold()
    first = store.add([make_message(0)])
    yield later(0.1, lambda: None)  # the writer took it and waits for the lock
    counted = store.write(store.repository.count)
    second = store.add([make_message(1)])
    yield later(0.1, write_lock.release)
    results = yield defer.gatherResults([first, counted, second])
    assert results[1] == 1  # the call ran after the first group, before the second
    assert results[0][0] < results[2][0]


@pytest_twisted.inlineCallbacks
def test_a_file_add_keeps_its_place_behind_calls(open_sqlite_store, make_message):
    """On SQLite an add with its source file waits for the calls asked before it (a file_moved may matter)."""
    store = open_sqlite_store()
    yield store.add([make_message(0)])
    release = threading.Event()
    running = store.write(release.wait, 10)
    yield later(0.1, lambda: None)
    counted = store.write(store.repository.count)
    added = store.add([make_message(1)], SourceFile("/in/1.hl7", "1" * 64, 1, 1_700_000_000_000_000_000))
    yield later(0.1, release.set)
    results = yield defer.gatherResults([running, counted, added])
    assert results[:2] == [True, 1] and len(results[2]) == 1


@pytest_twisted.inlineCallbacks
def test_power_loss_durability_commits_on_the_writer_thread(open_store, backend, make_message):
    """With an fsync on every commit the reactor must not wait for the disk: a writer thread commits."""
    store = open_store(durability="power_loss")
    threads = commit_threads(store.repository.engine)
    yield store.add([make_message(0)])
    assert threads == [_ADDS_THREAD[backend]]


@pytest_twisted.inlineCallbacks
def test_a_write_lock_sends_inline_adds_to_the_writer_which_waits(
    open_store, backend, write_lock, make_message
):
    """While another process writes, the reactor does not wait: the writer commits the adds once it can."""
    store = open_store()
    threads = commit_threads(store.repository.engine)
    write_lock.hold()
    adds = [store.add([make_message(n)]) for n in range(3)]
    yield later(0.3, write_lock.release)
    results = yield defer.gatherResults(adds)
    assert threads == [_ADDS_THREAD[backend]]
    assert [store.repository.get(ids[0]).control_id for ids in results] == ["C0", "C1", "C2"]


@pytest_twisted.inlineCallbacks
def test_inline_adds_keep_their_order_with_calls_asked_after_them(open_sqlite_store, make_message):
    """On SQLite a call asked in the same turn as adds runs after them: the adds go to the writer first."""
    store = open_sqlite_store()
    [first] = yield store.add([make_message(0)])
    added = store.add([make_message(1)])
    counted = store.write(lambda: store.repository.count())
    ids, count = yield defer.gatherResults([added, counted])
    assert count == 2 and ids[0] > first


@pytest_twisted.inlineCallbacks
def test_stop_commits_adds_still_waiting_for_the_end_of_the_turn(open_store, store_url, make_message):
    """stop() asked in the same turn as an add still commits that add before the store stops."""
    store = open_store()
    added = store.add([make_message(0)])
    yield store.stop()
    assert (yield added)
    assert MessageRepository(create_engine_for(store_url)).count() == 1


@pytest_twisted.inlineCallbacks
def test_the_writer_checkpoints_what_inline_commits_wrote(open_sqlite_store, make_message, sqlite_url):
    """Inline commits never checkpoint the WAL themselves; the idle writer copies it into the file."""
    store = open_sqlite_store()
    database = Path(sa.engine.make_url(sqlite_url).database)
    before = database.stat().st_size
    for n in range(20):
        yield store.add([make_message(n, raw=bytes(4000))])
    yield later(1.0, lambda: None)
    assert database.stat().st_size >= before + 20 * 4000


@pytest_twisted.inlineCallbacks
def test_the_writer_checkpoints_what_its_own_commits_wrote(open_sqlite_store, make_message, sqlite_url):
    """No connection of the store checkpoints as it commits; the idle writer copies what its commits wrote."""
    store = open_sqlite_store()
    database = Path(sa.engine.make_url(sqlite_url).database)
    before = database.stat().st_size
    yield store.add([make_message(n, raw=bytes(4000)) for n in range(100)])  # a large batch: the writer's
    yield later(1.0, lambda: None)
    assert database.stat().st_size >= before + 100 * 4000


def wal_salt(wal: Path) -> int:
    """The WAL header's first salt: one more each time the WAL starts over, whichever connection
    starts it (the checkpoint sequence number beside it counts only the restarts of the connection
    that wrote the header: under load the writer's commits start it over too)."""
    return int.from_bytes(wal.read_bytes()[16:20], "big")


def restarts_since(salt: int, wal: Path) -> int:
    """How many times the WAL started over since its first salt was ``salt``."""
    return (wal_salt(wal) - salt) % 2**32


@pytest_twisted.inlineCallbacks
def test_the_wal_starts_over_under_steady_inline_commits(open_sqlite_store, make_message, sqlite_url):
    """Under inline commits that never pause, the writer's checkpoints still let the WAL start over."""
    store = open_sqlite_store()
    wal = Path(sa.engine.make_url(sqlite_url).database + "-wal")

    yield store.add([make_message(0)])
    before, written = wal_salt(wal), 1
    deadline = time.monotonic() + 1.5  # six checkpoint intervals
    while time.monotonic() < deadline:
        yield store.add([make_message(written, raw=bytes(4000))])
        written += 1
    assert written > 200
    assert restarts_since(before, wal) >= 3


@pytest_twisted.inlineCallbacks
def test_steady_inline_commits_start_the_wal_over_in_place_never_truncating_it(
    open_sqlite_store, make_message, sqlite_url
):
    """One message a commit: checkpoints come often enough that the WAL starts over long before half
    of wal_max_bytes, so it is written over in place, never truncated and grown again.

    Every 20 commits the writer has a turn, in which it checkpoints first when one is due: on a loaded
    machine the system may otherwise not run it for hundreds of commits, and the WAL passes half its
    limit however early the checkpoint was due (and is truncated then, as it should be).
    """
    limit = 32 * 1024 * 1024  # every 500 commits, as before, these messages filled 24 MB: truncated
    store = open_sqlite_store(wal_max_bytes=limit)
    wal = Path(sa.engine.make_url(sqlite_url).database + "-wal")
    yield store.add([make_message(0)])
    before, sizes, written = wal_salt(wal), [], 1
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline or written < 1500:
        yield store.add([make_message(written, raw=bytes(1000))])
        written += 1
        if written % 20 == 0:
            sizes.append(wal.stat().st_size)
            yield store.write(lambda: None)  # the writer's turn
        assert written < 100_000
    restarts = restarts_since(before, wal)
    assert restarts >= 5, (restarts, written)
    assert max(sizes) < limit // 2, f"the WAL reached {max(sizes):,} bytes"
    assert sizes == sorted(sizes), "the WAL was truncated"


@pytest_twisted.inlineCallbacks
def test_an_inline_group_waits_for_idle_senders_then_commits_once(open_sqlite_store, make_message):
    """While connected senders have nothing in flight the group waits; the last one's add commits it."""
    from twisted.internet import reactor

    # The group waits GROUP_WAIT_SECONDS at most from its first add: on a loaded machine the turn
    # could take that long by itself and the group commit at its end. Here time passes only when told.
    clock = ClockedReactor(reactor)
    store = open_sqlite_store(reactor=clock)
    idle = [1]
    store.wait_for_senders(lambda: idle[0])
    threads = commit_threads(store.repository.engine)
    first = store.add([make_message(0)])
    clock.advance(0)  # the end of the turn: one sender is still expected
    assert not first.called and threads == []
    idle[0] = 0
    second = store.add([make_message(1)])
    yield defer.gatherResults([first, second])
    assert threads == ["MainThread"]


@pytest_twisted.inlineCallbacks
def test_the_add_that_finds_no_sender_idle_commits_its_group_before_returning(
    open_sqlite_store, make_message
):
    """Once every connected sender waits for the store, the add that made it so commits the group at
    once, with the adds asked before it in the turn: one commit, no reactor turn to wait for."""
    store = open_sqlite_store()
    idle = [1]
    store.wait_for_senders(lambda: idle[0])
    commits = commit_threads(store.repository.engine)
    first = store.add([make_message(0)])
    assert not first.called
    idle[0] = 0
    second = store.add([make_message(1)])
    assert first.called and second.called and len(commits) == 1
    [first_id], [second_id] = yield defer.gatherResults([first, second])
    assert second_id == first_id + 1


@pytest_twisted.inlineCallbacks
def test_an_inline_group_waits_for_idle_senders_only_so_long(open_sqlite_store, make_message):
    """A connected sender that stays quiet delays a commit by GROUP_WAIT_SECONDS at most."""
    store = open_sqlite_store()
    store.wait_for_senders(lambda: 1)
    from twisted.internet import reactor

    started = reactor.seconds()
    yield store.add([make_message(0)])
    assert GROUP_WAIT_SECONDS <= reactor.seconds() - started < 1.0


def _writer_statements(engine: sa.Engine) -> list[str]:
    """The COMMITs and WAL checkpoints the store's writer thread runs from now on, in order."""
    seen: list[str] = []

    def note(sql: str) -> None:
        if threading.current_thread().name == "hl7engine-store-writer":
            if sql == "COMMIT":
                seen.append("commit")
            elif "wal_checkpoint" in sql:
                seen.append("checkpoint")

    sa.event.listen(
        engine, "checkout", lambda dbapi_connection, record, proxy: dbapi_connection.set_trace_callback(note)
    )
    return seen


def _hold(started: threading.Event, release: threading.Event, seconds: float) -> bool:
    """A writer call that says it has begun, and holds the writer until released (or ``seconds``)."""
    started.set()
    return release.wait(seconds)


@pytest_twisted.inlineCallbacks
def test_the_writer_commits_the_adds_queued_for_it_before_a_checkpoint_due(open_sqlite_store, make_message):
    """Adds the reactor handed to the busy writer commit before the checkpoint that came due meanwhile."""
    for _ in range(3):  # a stall of the machine past the idle checkpoint spoils a try: again
        store = open_sqlite_store()
        statements = _writer_statements(store.repository.engine)
        for n in range(MIN_CHECKPOINT_COMMITS - 1):  # inline commits, each counted toward a checkpoint
            yield store.add([make_message(n)])
        early = list(statements)
        started, release = threading.Event(), threading.Event()
        busy = store.write(_hold, started, release, 30)  # the last commit counted: a checkpoint is due
        deadline = time.monotonic() + 10
        while not started.is_set() and time.monotonic() < deadline:  # the writer holds the lock now
            yield later(0.005, lambda: None)
        added = store.add([make_message(100)])  # the writer is busy: the add waits in its queue
        yield later(0.05, release.set)
        yield busy
        yield added
        yield later(0.5, lambda: None)  # the checkpoint, once the writer has nothing else to do
        if not early:
            break
        yield store.stop()
    assert statements[:2] == ["commit", "checkpoint"]
