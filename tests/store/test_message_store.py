"""engine.store.message_store: MessageStore's life, and the repositories through it, on both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy.engine import make_url
from twisted.internet import defer

from engine.errors import StoreError
from engine.model import AttemptResult, Delivery, Outcome, Status
from engine.store.driver.record_attach import record_file
from engine.store.message_store import ATTEMPTS_PER_WRITE, MessageStore
from engine.store.queues import QueueRepository
from engine.store.reads import MessageQuery
from engine.store.writelock import WriterLock
from tests.fakes.harness import wait_until
from tests.fakes.messages import T0
from tests.fakes.store import WriteLock, later, queued


@pytest_twisted.inlineCallbacks
def test_reads_go_through_the_pool(open_store, make_message):
    """search(), get() and count() fire with the repository's answers."""
    store = open_store(read_threads=2)
    ids = yield store.add([make_message(n) for n in range(3)])
    found, one, counted, empty = yield defer.gatherResults(
        [
            store.search(MessageQuery(limit=2)),
            store.get(ids[1]),
            store.count(MessageQuery(control_id="C2")),
            store.add([]),
        ]
    )
    assert [s.id for s in found] == ids[:0:-1]
    assert one.control_id == "C1"
    assert (counted, empty) == (1, [])


def test_store_lifecycle_errors(sqlite_url):
    """A store cannot start twice, has no repository before start, and stop() before start is a no-op."""
    from twisted.internet import reactor

    never_started = MessageStore(sqlite_url, reactor=reactor)
    with pytest.raises(StoreError):
        _ = never_started.repository
    stopped = never_started.stop()
    assert stopped.called and stopped.result is None
    with pytest.raises(StoreError):
        never_started.start()


def test_start_reports_an_unreachable_database():
    """start() raises StoreError when the database cannot be reached."""
    from twisted.internet import reactor

    store = MessageStore("postgresql://postgres@127.0.0.1:1/nothing", reactor=reactor)
    with pytest.raises(StoreError):
        store.start()


@pytest_twisted.inlineCallbacks
def test_store_finds_duplicates(open_store, make_message):
    """find_duplicate() on the store fires with the repository's answer."""
    store = open_store()
    [message_id] = yield store.add([make_message(0)])
    assert (yield store.find_duplicate("LAB", "NORTH", "C0", since=T0)) == (message_id, make_message(0).ack)
    assert (yield store.find_duplicate("LAB", "NORTH", "C0", since=T0 + timedelta(seconds=1))) is None


@pytest_twisted.inlineCallbacks
def test_store_runs_a_message_from_receipt_to_sent(open_store, make_message):
    """add, record_processing, due_deliveries, record_attempts, get and more work together, on the reactor."""
    store = open_store()
    threads = []
    [message_id] = yield store.add([make_message(0)])
    [pending] = yield store.pending_for_processing("adt")
    assert pending.id == message_id
    delivery_ids = yield store.record_processing([queued(message_id, "lab")]).addCallback(
        lambda ids: threads.append(threading.current_thread()) or ids
    )
    now = datetime.now(UTC)
    [due] = yield store.due_deliveries("adt", "lab", now=now, limit=10, head_only=True)
    assert isinstance(due, Delivery) and due.delivery_id == delivery_ids[0]
    assert (yield store.queue_depth("adt", "lab")) == 1
    assert (yield store.queue_depths()) == {("adt", "lab"): 1}
    assert (yield store.next_due_at("adt", "lab")) <= now
    yield store.record_attempts(
        [AttemptResult(due.delivery_id, Outcome.SENT, now, response_code="AA")]
    ).addCallback(lambda _: threads.append(threading.current_thread()))
    stored = yield store.get(message_id)
    assert stored.status == Status.SENT
    assert threads == [threading.main_thread()] * 2
    assert [s.id for s in (yield store.search(MessageQuery(status=Status.SENT)))] == [message_id]


@pytest_twisted.inlineCallbacks
def test_queues_resume_after_a_restart(open_store, make_message):
    """Queued deliveries are still due, in order and with their attempts, in a new store on the database."""
    store = open_store()
    ids = yield store.add([make_message(n) for n in range(3)])
    delivery_ids = yield store.record_processing([queued(i, "lab") for i in ids])
    now = datetime.now(UTC)
    yield store.record_attempts(
        [AttemptResult(delivery_ids[0], Outcome.RETRY, now, reason="down", next_attempt_at=now)]
    )
    yield store.stop()
    reopened = open_store()
    due = yield reopened.due_deliveries("adt", "lab", now=datetime.now(UTC), limit=10, head_only=False)
    assert [(d.delivery_id, d.attempt) for d in due] == [
        (delivery_ids[0], 2),
        (delivery_ids[1], 1),
        (delivery_ids[2], 1),
    ]
    assert (yield reopened.pending_for_processing("adt")) == []


@pytest_twisted.inlineCallbacks
def test_store_resend_and_reprocess(open_store, make_message):
    """resend() and reprocess() go through the writer and fire with the new ids and the count."""
    store = open_store()
    ids = yield store.add([make_message(0), make_message(1)])
    delivery_ids = yield store.record_processing([queued(i, "lab") for i in ids])
    now = datetime.now(UTC)
    yield store.record_attempts([AttemptResult(delivery_ids[0], Outcome.ERROR, now, reason="AE")])
    resent = yield store.resend([ids[0]], destination="lab")
    assert len(resent) == 1 and resent[0] > delivery_ids[1]
    assert (yield store.reprocess([ids[1]])) == 1
    assert [p.id for p in (yield store.pending_for_processing("adt"))] == [ids[1]]
    assert (yield store.next_due_at("adt", "lab", head_only=True)) is not None


@pytest_twisted.inlineCallbacks
def test_a_large_round_of_attempts_is_several_writes_with_received_messages_between(open_store, make_message):
    """On SQLite a round of more than ATTEMPTS_PER_WRITE attempts goes in writes of that many.

    Every attempt is recorded, and a message received meanwhile commits before the last of them.
    On PostgreSQL (its adds beside the calls) the round is one write.
    """
    store = open_store()
    count = 2 * ATTEMPTS_PER_WRITE + 1
    ids = yield store.add([make_message(n) for n in range(count)])
    delivery_ids = yield store.record_processing([queued(i, "lab") for i in ids])
    seen = []  # messages stored as each write of the round starts, from the writer thread
    release = threading.Event()
    running = store.write(release.wait, 10)
    original = QueueRepository.record_attempts

    def counting(queues, results, lease=None):
        seen.append(store.repository.count())
        return original(queues, results, lease)

    now = datetime.now(UTC)
    QueueRepository.record_attempts = counting
    try:
        recorded = store.record_attempts(
            [AttemptResult(d, Outcome.SENT, now, response_code="AA") for d in delivery_ids]
        )
        received = store.add([make_message(count)])
        yield later(0.1, release.set)
        yield running
        yield recorded
        yield received
    finally:
        QueueRepository.record_attempts = original
    assert (yield store.queue_depth("adt", "lab")) == 0
    assert (yield store.count(MessageQuery(status=Status.SENT))) == count
    if store.repository.engine.dialect.name == "sqlite":
        assert seen == [count + 1] * 3  # the received message went ahead of the whole round
    else:
        assert len(seen) == 1


def _delete_applied_marks(engine) -> int:
    """A write of the record's tables alone (its file's lock on SQLite): how many marks it deleted."""
    with engine.begin() as connection:
        return connection.exec_driver_sql("DELETE FROM record_applied_messages").rowcount


@pytest_twisted.inlineCallbacks
def test_the_record_writes_on_a_lane_of_its_own_and_intake_never_waits_for_its_lock(
    sqlite_url, open_sqlite_store, make_message
):
    """While another connection holds the record file's write lock, a record write waits for it on its
    own thread, and received messages (and the writer's calls) commit at once; the record write then
    commits too."""
    store = open_sqlite_store(lock_timeout=5.0)
    lock = WriteLock(sqlite_url, record=True)
    lock.hold()
    try:
        record_write = store.write_record(_delete_applied_marks, store.repository.engine)
        ids = yield store.add([make_message(1)])
        yield store.record_answer(ids[0], "AA", b"MSA|AA|C1")
        waiting = not record_write.called
    finally:
        lock.release()
    deleted = yield record_write
    assert (len(ids), waiting, deleted) == (1, True, 0)


@pytest_twisted.inlineCallbacks
def test_the_record_lane_stops_with_the_store(open_store):
    """A record write asked before stop() commits; one asked after is refused, as any write."""
    store = open_store()
    done = store.write_record(_delete_applied_marks, store.repository.engine)
    yield store.stop()
    assert done.called and done.result == 0
    with pytest.raises(StoreError, match="not running"):
        yield store.write_record(_delete_applied_marks, store.repository.engine)


@pytest_twisted.inlineCallbacks
def test_with_other_processes_the_record_lane_takes_the_record_files_turn_never_the_stores(
    sqlite_url, open_sqlite_store
):
    """shared: a record write goes on while another process holds the store file's turn
    (WriterLock), and waits while one holds the record file's."""
    store = open_sqlite_store(shared=True, lock_timeout=5.0)
    database = Path(make_url(sqlite_url).database)
    stores_turn = WriterLock(database, 5.0)
    stores_turn.take()
    try:
        deleted = yield store.write_record(_delete_applied_marks, store.repository.engine)
    finally:
        stores_turn.release()
        stores_turn.close()
    records_turn = WriterLock(record_file(database), 5.0)
    records_turn.take()
    try:
        waiting = store.write_record(_delete_applied_marks, store.repository.engine)
        yield later(0.3, lambda: None)
        waited = not waiting.called
    finally:
        records_turn.release()
    yield waiting
    records_turn.close()
    assert (deleted, waited) == (0, True)


@pytest_twisted.inlineCallbacks
def test_the_record_is_apart_where_it_has_a_file_of_its_own_and_not_on_a_file_uri(tmp_path):
    """A store at a path writes the record on its own lane; one opened by a ``file:`` URI shares its file."""
    from twisted.internet import reactor

    apart = MessageStore(f"sqlite:///{tmp_path / 'a.db'}", reactor=reactor)
    shared = MessageStore(f"sqlite:///file:{tmp_path / 'b.db'}?uri=true", reactor=reactor)
    apart.start()
    shared.start()
    try:
        assert apart.record_apart and record_file(tmp_path / "a.db").exists()
        assert not shared.record_apart and not record_file(tmp_path / "b.db").exists()
    finally:
        yield apart.stop()
        yield shared.stop()


def _hold_a_connection(engine, release: threading.Event) -> bool:
    """Hold a connection of ``engine`` until ``release`` is set (10 s at most); whether it was."""
    with engine.connect():
        return release.wait(10)


@pytest_twisted.inlineCallbacks
def test_the_engine_pools_as_many_connections_as_the_stores_threads_hold_at_once(
    open_store, backend, make_message
):
    """With every thread of the store holding all it ever holds at once (each reader's, a write
    call's, the connection kept for intake's commits; on SQLite also a record call's and the
    checkpoints' of both files), the engine's pool keeps exactly that many: none kept idle, none
    opened beyond it."""
    store = open_store(read_threads=2)
    engine = store.repository.engine
    yield store.add([make_message(0)])  # opens the connection kept for intake's commits
    kept = 1
    if backend == "sqlite":
        # An inline commit's; the writer thread's and the record thread's, once each checkpoints.
        yield store.write_record(_delete_applied_marks, engine)
        kept = 3
    yield wait_until(lambda: engine.pool.checkedout() == kept, seconds=10)
    release = threading.Event()
    held = [store.write(_hold_a_connection, engine, release)]
    held += [store.read(_hold_a_connection, engine, release) for _ in range(2)]
    if backend == "sqlite":
        held.append(store.write_record(_hold_a_connection, engine, release))
    try:
        yield wait_until(lambda: engine.pool.checkedout() == kept + len(held), seconds=10)
        at_once = engine.pool.checkedout()
    finally:
        release.set()
    assert (yield defer.gatherResults(held)) == [True] * len(held)
    assert at_once == engine.pool.size()
