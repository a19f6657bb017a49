"""engine.store.messages: the repository's SQL and the store's group commit, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer

from engine.errors import StoreError
from engine.model import NewDelivery, NewMessage, ProcessingResult, SourceFile, Status
from engine.store.db import create_engine_for
from engine.store.driver import VALUES_MAX_PARAMETERS
from engine.store.message_store import MessageStore
from engine.store.messages import (
    MessageEvent,
    MessageQuery,
    MessageRepository,
    MessageSummary,
    StoredMessage,
)
from engine.store.pool import GROUP_WAIT_SECONDS
from engine.store.schema import deliveries, message_events, messages, source_files

from .conftest import T0, count_commits, later


def _expected(message_id: int, new: NewMessage, events=()) -> StoredMessage:
    """What get() should return for a message stored from ``new``."""
    columns = {f.name: getattr(new, f.name) for f in dataclasses.fields(NewMessage) if f.name != "deliveries"}
    return StoredMessage(id=message_id, **columns, deliveries=(), events=tuple(events))


# The repository


def test_round_trip_keeps_raw_and_ack_bytes_exactly(repository, make_message):
    """get() returns every column as inserted; raw and ack bytes survive NULs, invalid UTF-8 and MLLP bytes."""
    raw = b"MSH|^~\\&|LAB|\xe9\xff\xfe|EHR\x00|X|||ADT^A01|C1|P|2.5\r\x0bPID|\x00\x1c\x0d\r\n\x80"
    ack = b"MSH|^~\\&|\x00\xff\rMSA|AA|C1\r"
    new = make_message(1, raw=raw, ack=ack, charset="8859/1", batch_control_id="B7", batch_index=3)
    [message_id] = repository.insert([new])
    stored = repository.get(message_id)
    assert stored == _expected(message_id, new)
    assert type(stored.raw) is bytes and stored.raw == raw and stored.ack == ack


@pytest.mark.parametrize("others", [0, 200], ids=["small group", "large group"])
def test_a_group_round_trips_every_column_as_a_single_message_does(repository, make_message, others):
    """A group stores each column as inserted: text an array literal would quote ({ } , " \\ NULL), non-ASCII
    text, empty and missing values, bytes of every kind. On PostgreSQL a small group is one statement of
    scalar parameters, a large one (more than VALUES_MAX_PARAMETERS) one of arrays, sent in binary."""
    awkward = 'a,b {c} "d" \\e\\ NULL \u00e9\u4e2d\U0001f600'
    group = [
        make_message(1),
        make_message(
            2,
            raw=b'MSH|^~\\&|\x00\xff{}",\\\rPID|1\r',
            ack=b"",
            channel=awkward[:64],
            peer="NULL",
            error=awkward,
            sending_application="",
            patient_id="{1,2}",
            batch_control_id='B"1',
            batch_index=0,
            received_at=datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5))),
        ),
        make_message(
            3, channel=None, ack=None, charset="UNICODE UTF-8", batch_control_id=None, batch_index=None
        ),
    ] + [make_message(10 + n) for n in range(others)]
    inserted = len(messages.c) - 1  # an insert fills every column but id
    assert (len(group) * inserted > VALUES_MAX_PARAMETERS) == (others > 0)
    ids = repository.insert(group)
    assert [repository.get(i) for i in ids] == [_expected(i, new) for i, new in zip(ids, group)]


def test_received_at_is_read_back_in_utc(repository, make_message):
    """An aware time with any offset comes back as the same instant in UTC."""
    local = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    [message_id] = repository.insert([make_message(received_at=local)])
    stored = repository.get(message_id)
    assert stored.received_at == local
    assert stored.received_at.utcoffset() == timedelta(0)
    assert stored.received_at.isoformat() == "2024-03-01T12:30:15.123456+00:00"


@pytest.mark.parametrize(
    "count", [5, 203]
)  # 203 = 128 + 64 + 8 + 2 + 1: SQLite's chunks of multi-row INSERTs
def test_insert_returns_ids_in_order_and_nothing_for_nothing(repository, make_message, count):
    """insert() gives one increasing id per message, in the order given; an empty insert gives []."""
    repository.insert([make_message(0)])  # ids do not start at 1
    ids = repository.insert([make_message(n) for n in range(count)])
    assert ids == sorted(ids) and len(set(ids)) == count
    assert [repository.get(i).control_id for i in ids] == [f"C{n}" for n in range(count)]
    assert repository.insert([]) == []


def test_naive_received_at_is_refused(repository, make_message):
    """A naive received_at raises StoreError (not locked) and stores nothing."""
    with pytest.raises(StoreError) as refused:
        repository.insert([make_message(0), make_message(1, received_at=datetime(2024, 3, 1, 12, 0))])
    assert not refused.value.locked and "timezone-aware" in str(refused.value)
    assert repository.count() == 0


def test_header_copies_lose_nuls_and_are_cut_to_fit(repository, make_message):
    """Header columns drop NULs and are cut to their column length; raw keeps everything."""
    control_id = "\x00" + "9" * 300
    new = make_message(0, control_id=control_id, message_code="VERYLONGCODE", error="bad\x00byte")
    [message_id] = repository.insert([new])
    stored = repository.get(message_id)
    assert (stored.control_id, stored.message_code, stored.error) == ("9" * 199, "VERYLONGCO", "badbyte")
    assert stored.raw == new.raw


def test_get_unknown_id_is_none(repository):
    """get() of an id that was never stored is None."""
    assert repository.get(12345) is None


def test_get_returns_status_history_oldest_first(repository, make_message):
    """get() includes the message's events ordered by time, and only its own."""
    first, second = repository.insert([make_message(0), make_message(1)])
    rows = [
        {"message_id": first, "at": T0 + timedelta(seconds=9), "status": Status.SENT, "detail": "to lab"},
        {"message_id": second, "at": T0, "status": Status.FILTERED, "detail": "other message"},
        {"message_id": first, "at": T0 + timedelta(seconds=5), "status": Status.QUEUED, "detail": ""},
    ]
    with repository.engine.begin() as connection:
        connection.execute(sa.insert(message_events), rows)
    events = repository.get(first).events
    assert [(e.at, e.status, e.detail) for e in events] == [
        (T0 + timedelta(seconds=5), "QUEUED", ""),
        (T0 + timedelta(seconds=9), "SENT", "to lab"),
    ]
    assert all(isinstance(e, MessageEvent) and isinstance(e.id, int) for e in events)


def test_summary_json_and_message_type(repository, make_message):
    """to_json_dict() gives id, channel, control_id, type, status and ISO received_at; type drops an empty trigger."""
    [with_trigger, without_trigger] = repository.insert(
        [make_message(0), make_message(1, trigger_event="", channel=None)]
    )
    [second, first] = repository.search(MessageQuery())
    assert first.to_json_dict() == {
        "id": with_trigger,
        "channel": "adt",
        "control_id": "C0",
        "type": "ADT^A01",
        "status": "RECEIVED",
        "received_at": "2024-03-01T12:00:00+00:00",
        "listener": "mllp-in",
        "peer": "127.0.0.1:40000",
        "sending_application": "LAB",
        "sending_facility": "NORTH",
        "message_code": "ADT",
        "trigger_event": "A01",
        "version": "2.5",
        "ack_code": "AA",
        "error": "",
        "patient_id": "",
    }
    assert (second.id, second.message_type, second.to_json_dict()["channel"]) == (
        without_trigger,
        "ADT",
        None,
    )
    assert repository.get(with_trigger).summary == first


def test_search_by_patient_id(repository, make_message):
    """patient_id finds every message of one patient (PID-3.1 as intake recorded it), newest first."""
    ids = repository.insert([make_message(n, patient_id=f"MRN{n % 2}") for n in range(5)])
    found = repository.search(MessageQuery(patient_id="MRN1"))
    assert [s.id for s in found] == [ids[3], ids[1]] and {s.patient_id for s in found} == {"MRN1"}
    assert repository.count(MessageQuery(patient_id="MRN9")) == 0


def _processing_trail(repository: MessageRepository, message_id: int) -> tuple:
    """What processing left of a message, without ids and times: its status, error, content, deliveries and events."""
    stored = repository.get(message_id)
    timeless = [
        c
        for c in deliveries.c
        if c.name not in ("id", "message_id", "created_at", "updated_at", "next_attempt_at")
    ]
    with repository.engine.connect() as connection:
        rows = connection.execute(
            sa.select(*timeless).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
        ).all()
    return (
        stored.status,
        stored.error,
        stored.transformed,
        [tuple(row) for row in rows],
        [(e.status, e.detail, e.destination) for e in stored.events],
    )


@pytest.mark.parametrize(
    "result",
    [
        ProcessingResult(
            0,
            Status.QUEUED,
            transformed=b"MSH|changed\r",
            deliveries=(
                NewDelivery("emr", Status.QUEUED, "C1", b"MSH|to emr\r"),
                NewDelivery("archive", Status.FILTERED, "C1", None, "PID-8 is U, not one of M, F"),
                NewDelivery(
                    "lab",
                    Status.ERROR,
                    "C1",
                    None,
                    "channels[0].destinations[2].transforms[0]: no such table row",
                ),
            ),
        ),
        ProcessingResult(0, Status.FILTERED, reason="channels[0].filters[0]: MSH-9.1 is ORU"),
        ProcessingResult(0, Status.ERROR, reason="channels[0].transforms[0]: PV1-3.1 7W not in wards"),
        ProcessingResult(0, Status.TRANSFORMED, transformed=b"MSH|changed\r"),
    ],
    ids=["queued", "filtered", "error", "transformed"],
)
def test_a_message_processed_at_intake_is_stored_as_a_pass_records_it(
    repository, queues, make_message, result
):
    """insert() of a message carrying its processing writes the same status, content, deliveries and events as insert() RECEIVED then record_processing()."""
    [passed] = repository.insert([make_message(1)])
    queues.record_processing([dataclasses.replace(result, message_id=passed)])
    at_intake = make_message(
        1,
        status=result.status,
        error=result.reason,
        transformed=result.transformed,
        deliveries=result.deliveries,
    )
    [inline] = repository.insert([at_intake])
    assert _processing_trail(repository, inline) == _processing_trail(repository, passed)
    assert _processing_trail(repository, inline)[0] == result.status


@pytest.mark.parametrize("destinations", [2, 2500], ids=["two", "more than PostgreSQL takes as parameters"])
def test_messages_processed_at_intake_keep_their_own_deliveries_in_a_group(
    repository, make_message, destinations
):
    """In one group, each processed message gets its own deliveries and events, beside a RECEIVED one; also more than 65,535 values of them (PostgreSQL: arrays)."""
    queued = tuple(
        NewDelivery(f"d{n}", Status.QUEUED, "C1", f"to d{n}".encode()) for n in range(destinations)
    )
    group = [
        make_message(1, status=Status.QUEUED, deliveries=queued),
        make_message(2),
        make_message(3, status=Status.FILTERED, error="channels[0].filters[0]: no", deliveries=()),
    ]
    ids = repository.insert(group)
    first, second, third = (repository.get(i) for i in ids)
    assert [d.destination for d in first.deliveries] == [f"d{n}" for n in range(destinations)]
    assert [(e.status, e.destination) for e in first.events] == [("QUEUED", None)] + [
        ("QUEUED", f"d{n}") for n in range(destinations)
    ]
    assert (second.status, second.deliveries, second.events) == ("RECEIVED", (), ())
    assert (third.status, third.deliveries, [(e.status, e.detail) for e in third.events]) == (
        "FILTERED",
        (),
        [("FILTERED", "channels[0].filters[0]: no")],
    )


# Searching: five messages, found newest first (so results list indexes from high to low)

_SEARCHABLE = [
    dict(
        message_code="ADT",
        trigger_event="A01",
        sending_application="LAB",
        sending_facility="NORTH",
        channel="adt",
    ),
    dict(
        message_code="ADT",
        trigger_event="A08",
        sending_application="LAB",
        sending_facility="SOUTH",
        channel="adt",
    ),
    dict(
        message_code="ORU",
        trigger_event="R01",
        message_structure="ORU_R01",
        sending_application="RAD",
        sending_facility="NORTH",
        channel="results",
    ),
    dict(
        message_code="ADT",
        trigger_event="A01",
        sending_application="RAD",
        sending_facility="SOUTH",
        channel=None,
        status=Status.REJECTED,
        listener="mllp-other",
        control_id="C0",
    ),
    dict(
        message_code="ORU",
        trigger_event="R01",
        message_structure="ORU_R01",
        sending_application="LAB",
        sending_facility="NORTH",
        channel="results",
    ),
]


@pytest.fixture
def searchable(repository, make_message) -> list[int]:
    """The ids of the five _SEARCHABLE messages, received one minute apart from T0."""
    return repository.insert([make_message(n, **columns) for n, columns in enumerate(_SEARCHABLE)])


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({}, [4, 3, 2, 1, 0]),
        ({"control_id": "C0"}, [3, 0]),
        ({"message_type": "ADT"}, [3, 1, 0]),
        ({"message_type": "ADT^A01"}, [3, 0]),
        ({"message_type": "^R01"}, [4, 2]),
        ({"message_type": "ORU^R01^ORU_R01"}, [4, 2]),
        ({"message_type": "ADT^R01"}, []),
        ({"sending_application": "RAD"}, [3, 2]),
        ({"sending_facility": "SOUTH"}, [3, 1]),
        ({"sending_application": "LAB", "sending_facility": "NORTH"}, [4, 0]),
        ({"status": Status.REJECTED}, [3]),
        ({"channel": "results"}, [4, 2]),
        ({"listener": "mllp-other"}, [3]),
        ({"since": T0 + timedelta(minutes=2)}, [4, 3, 2]),
        ({"until": T0 + timedelta(minutes=2)}, [1, 0]),
        ({"since": T0 + timedelta(minutes=1), "until": T0 + timedelta(minutes=3)}, [2, 1]),
        ({"since": T0 + timedelta(hours=1, minutes=1), "until": T0 + timedelta(hours=1, minutes=3)}, []),
        ({"since": (T0 + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=-5)))}, [4]),
        ({"message_type": "ADT", "channel": "adt", "until": T0 + timedelta(minutes=1)}, [0]),
    ],
)
def test_search_by_each_criterion(repository, searchable, criteria, expected):
    """Each MessageQuery criterion narrows the results (all must match), newest first; count() agrees."""
    query = MessageQuery(**criteria)
    assert [s.id for s in repository.search(query)] == [searchable[n] for n in expected]
    assert repository.count(query) == len(expected)


def test_search_pages_by_keyset(repository, searchable):
    """limit and before_id walk the results newest first without gaps or repeats; count() ignores the page."""
    pages, before = [], None
    while page := repository.search(MessageQuery(limit=2, before_id=before)):
        pages.append([s.id for s in page])
        before = page[-1].id
    assert pages == [[searchable[4], searchable[3]], [searchable[2], searchable[1]], [searchable[0]]]
    assert repository.count(MessageQuery(limit=1, before_id=searchable[1])) == 5
    assert repository.count() == 5


def test_search_returns_summaries(repository, searchable):
    """search() returns MessageSummary values, not content."""
    [summary] = repository.search(MessageQuery(limit=1))
    assert type(summary) is MessageSummary
    assert (summary.id, summary.control_id, summary.channel, summary.status) == (
        searchable[4],
        "C4",
        "results",
        "RECEIVED",
    )


@pytest.mark.parametrize(
    "criteria", [{"limit": 0}, {"since": datetime(2024, 1, 1)}, {"until": datetime(2024, 1, 1)}]
)
def test_bad_queries_are_refused(criteria):
    """A limit below 1 or a naive time range is a ValueError when the query is made."""
    with pytest.raises(ValueError):
        MessageQuery(**criteria)


# The store


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
    assert seen == [_expected(i, new) for i, new in zip(ids, news)]


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
    commits = count_commits(store.repository.engine)
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
    commits = count_commits(store.repository.engine)
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


# Duplicates


def test_find_duplicate_is_the_newest_accepted_message_of_the_sender_in_the_window(repository, make_message):
    """Same sender and control id at or after since: the newest not-REJECTED one, with its ACK; otherwise None."""
    ids = repository.insert(
        [
            make_message(0, control_id="X1"),
            make_message(1, control_id="X1", status=Status.FILTERED),
            make_message(2, control_id="X1", status=Status.REJECTED, ack=b"AR"),
            make_message(3, control_id="X1", sending_facility="SOUTH"),
            make_message(4, control_id="X1", sending_application="RAD"),
        ]
    )
    assert repository.find_duplicate("LAB", "NORTH", "X1", since=T0) == (ids[1], make_message(1).ack)
    assert repository.find_duplicate("LAB", "NORTH", "X1", since=T0 + timedelta(minutes=1)) == (
        ids[1],
        make_message(1).ack,
    )
    assert (
        repository.find_duplicate("LAB", "NORTH", "X1", since=T0 + timedelta(minutes=1, microseconds=1))
        is None
    )
    assert repository.find_duplicate("LAB", "SOUTH", "X1", since=T0) == (ids[3], make_message(3).ack)
    assert repository.find_duplicate("LAB", "NORTH", "X2", since=T0) is None


def test_find_duplicate_matches_values_as_stored(repository, make_message):
    """A control id that was cut or lost NULs when stored is found by the value the sender sent; a missing ACK is None."""
    long_id = "7" * 250 + "\x00"
    [message_id] = repository.insert([make_message(0, control_id=long_id, ack=None)])
    assert repository.find_duplicate("LAB", "NORTH", long_id, since=T0) == (message_id, None)


def test_find_duplicate_refuses_a_naive_window(repository):
    """since must be timezone-aware."""
    with pytest.raises(ValueError):
        repository.find_duplicate("LAB", "NORTH", "C0", since=datetime(2024, 3, 1))


# Source files


def _source_file_rows(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(
                    source_files.c.path,
                    source_files.c.sha256,
                    source_files.c.size,
                    source_files.c.message_count,
                ).order_by(source_files.c.id)
            )
        ]


def test_source_file_is_recorded_with_its_messages(engine, make_message):
    """insert() with a source file records it (with its message count and read time) and file_already_read() finds it."""
    repository = MessageRepository(engine, clock=lambda: T0)
    ids = repository.insert(
        [make_message(0), make_message(1)], source_file=SourceFile("/in/a.hl7", "a" * 64, 120)
    )
    assert len(ids) == 2
    assert _source_file_rows(engine) == [("/in/a.hl7", "a" * 64, 120, 2)]
    with engine.connect() as connection:
        assert connection.execute(sa.select(source_files.c.read_at)).scalar_one() == T0
    assert repository.file_already_read("a" * 64)
    assert not repository.file_already_read("b" * 64)


def test_an_empty_source_file_is_recorded_too(repository):
    """A file without messages is still recorded, so it is not read again."""
    assert repository.insert([], source_file=SourceFile("/in/empty.hl7", "e" * 64, 0)) == []
    assert repository.file_already_read("e" * 64)


def test_source_file_and_messages_are_stored_together_or_not_at_all(repository, make_message):
    """When a message cannot be stored, neither the messages nor the file record are."""
    with pytest.raises(StoreError):
        repository.insert(
            [make_message(0), make_message(1, received_at=datetime(2024, 3, 1, 12, 0))],
            source_file=SourceFile("/in/bad.hl7", "f" * 64, 9),
        )
    assert repository.count() == 0
    assert not repository.file_already_read("f" * 64)


@pytest_twisted.inlineCallbacks
def test_grouped_adds_each_record_their_source_file(open_store, write_lock, make_message):
    """Adds with source files committed in one group record each file with its own message count; a failing add takes only its file down."""
    store = open_store()
    commits = count_commits(store.repository.engine)
    write_lock.hold()
    first = store.add([make_message(0)])
    files = [SourceFile(f"/in/{n}.hl7", f"{n}" * 64, n) for n in range(1, 4)]
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
    assert _source_file_rows(store.repository.engine) == [
        ("/in/1.hl7", "1" * 64, 1, 2),
        ("/in/3.hl7", "3" * 64, 3, 0),
    ]
    assert (yield store.file_already_read("1" * 64)) and not (yield store.file_already_read("2" * 64))


@pytest_twisted.inlineCallbacks
def test_store_finds_duplicates(open_store, make_message):
    """find_duplicate() on the store fires with the repository's answer."""
    store = open_store()
    [message_id] = yield store.add([make_message(0)])
    assert (yield store.find_duplicate("LAB", "NORTH", "C0", since=T0)) == (message_id, make_message(0).ack)
    assert (yield store.find_duplicate("LAB", "NORTH", "C0", since=T0 + timedelta(seconds=1))) is None


# Inline commits: SQLite with durability process commits a reactor turn's adds on the reactor thread.


# The thread that commits adds that do not commit inline: on PostgreSQL they have a writer thread of their own.
_ADDS_THREAD = {"sqlite": "hl7engine-store-writer", "postgresql": "hl7engine-store-adds"}


def _commit_threads(engine: sa.Engine) -> list[str]:
    """The name of the thread of every commit the engine makes from now on."""
    threads: list[str] = []
    sa.event.listen(engine, "commit", lambda connection: threads.append(threading.current_thread().name))
    return threads


@pytest_twisted.inlineCallbacks
def test_adds_of_one_reactor_turn_commit_together_on_the_reactor_thread(open_store, backend, make_message):
    """On SQLite (durability process) the adds asked in one turn share one commit, made on the reactor thread: no thread hop."""
    store = open_store()
    threads = _commit_threads(store.repository.engine)
    results = yield defer.gatherResults([store.add([make_message(n)]) for n in range(5)])
    assert threads == ["MainThread" if backend == "sqlite" else _ADDS_THREAD[backend]]
    ids = [i for ids in results for i in ids]
    assert ids == sorted(ids) and [store.repository.get(i).control_id for i in ids] == [
        f"C{n}" for n in range(5)
    ]


@pytest_twisted.inlineCallbacks
def test_adds_wait_behind_a_running_call_only_on_sqlite(open_store, backend, make_message):
    """SQLite has one writer, so an add commits after the call that runs; PostgreSQL commits it beside the call."""
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
def test_power_loss_durability_commits_on_the_writer_thread(open_store, backend, make_message):
    """With an fsync on every commit the reactor must not wait for the disk: a writer thread commits."""
    store = open_store(durability="power_loss")
    threads = _commit_threads(store.repository.engine)
    yield store.add([make_message(0)])
    assert threads == [_ADDS_THREAD[backend]]


@pytest_twisted.inlineCallbacks
def test_a_write_lock_sends_inline_adds_to_the_writer_which_waits(
    open_store, backend, write_lock, make_message
):
    """While another process writes, the reactor does not wait: the adds go to the writer, which commits them once the lock is free."""
    store = open_store()
    threads = _commit_threads(store.repository.engine)
    write_lock.hold()
    adds = [store.add([make_message(n)]) for n in range(3)]
    yield later(0.3, write_lock.release)
    results = yield defer.gatherResults(adds)
    assert threads == [_ADDS_THREAD[backend]]
    assert [store.repository.get(ids[0]).control_id for ids in results] == ["C0", "C1", "C2"]


@pytest_twisted.inlineCallbacks
def test_inline_adds_keep_their_order_with_calls_asked_after_them(open_sqlite_store, make_message):
    """On SQLite a call asked in the same turn as adds runs after them: the adds are handed to the writer first."""
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
    """Inline commits never checkpoint the WAL themselves; the idle writer copies it into the database file."""
    store = open_sqlite_store()
    database = Path(sa.engine.make_url(sqlite_url).database)
    before = database.stat().st_size
    for n in range(20):
        yield store.add([make_message(n, raw=bytes(4000))])
    yield later(1.0, lambda: None)
    assert database.stat().st_size >= before + 20 * 4000


@pytest_twisted.inlineCallbacks
def test_the_wal_starts_over_under_steady_inline_commits(open_sqlite_store, make_message, sqlite_url):
    """Under inline commits that never pause, the writer's checkpoints still let the WAL start over (not grow for as long as the load lasts)."""
    store = open_sqlite_store()
    wal = Path(sa.engine.make_url(sqlite_url).database + "-wal")

    def restarts() -> int:
        # The WAL header's checkpoint sequence number: one more each time the WAL starts over.
        return int.from_bytes(wal.read_bytes()[12:16], "big")

    yield store.add([make_message(0)])
    before, written = restarts(), 1
    deadline = time.monotonic() + 1.5  # six checkpoint intervals
    while time.monotonic() < deadline:
        yield store.add([make_message(written, raw=bytes(4000))])
        written += 1
    assert written > 200
    assert restarts() >= before + 3


@pytest_twisted.inlineCallbacks
def test_an_inline_group_waits_for_idle_senders_then_commits_once(open_sqlite_store, make_message):
    """While connected senders have nothing in flight the group waits for them; the last one's add commits the group."""
    store = open_sqlite_store()
    idle = [1]
    store.wait_for_senders(lambda: idle[0])
    threads = _commit_threads(store.repository.engine)
    first = store.add([make_message(0)])
    yield later(0, lambda: None)  # the end of the turn: one sender is still expected
    assert not first.called and threads == []
    idle[0] = 0
    second = store.add([make_message(1)])
    yield defer.gatherResults([first, second])
    assert threads == ["MainThread"]


@pytest_twisted.inlineCallbacks
def test_an_inline_group_waits_for_idle_senders_only_so_long(open_sqlite_store, make_message):
    """A connected sender that stays quiet delays a commit by GROUP_WAIT_SECONDS at most."""
    store = open_sqlite_store()
    store.wait_for_senders(lambda: 1)
    from twisted.internet import reactor

    started = reactor.seconds()
    yield store.add([make_message(0)])
    assert GROUP_WAIT_SECONDS <= reactor.seconds() - started < 1.0
