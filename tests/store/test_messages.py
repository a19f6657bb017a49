"""engine.store.messages: the repository's SQL and the store's group commit, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.model import (
    AttemptResult,
    DeliveryResult,
    NewDelivery,
    Outcome,
    ProcessingResult,
    SourceFile,
    Status,
)
from engine.store.dashboard import DashboardRepository
from engine.store.driver import VALUES_MAX_PARAMETERS
from engine.store.messages import MessageRepository
from engine.store.queues import QueueRepository
from engine.store.reads import STATUS_INDEX_WHERE, MessageEvent, MessageQuery, MessageSummary
from engine.store.schema import message_events, messages, source_files
from tests.fakes.messages import T0
from tests.fakes.store import NOW, expected_message, queued, source_file_rows

MTIME = 1_700_000_000_123_456_789  # a file's st_mtime_ns

# The repository


def test_round_trip_keeps_raw_and_ack_bytes_exactly(repository, make_message):
    """get() returns every column as inserted; raw and ack survive NULs, invalid UTF-8 and MLLP bytes."""
    raw = b"MSH|^~\\&|LAB|\xe9\xff\xfe|EHR\x00|X|||ADT^A01|C1|P|2.5\r\x0bPID|\x00\x1c\x0d\r\n\x80"
    ack = b"MSH|^~\\&|\x00\xff\rMSA|AA|C1\r"
    new = make_message(1, raw=raw, ack=ack, charset="8859/1", batch_control_id="B7", batch_index=3)
    [message_id] = repository.insert([new])
    stored = repository.get(message_id)
    assert stored == expected_message(message_id, new)
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
    assert [repository.get(i) for i in ids] == [expected_message(i, new) for i, new in zip(ids, group)]


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


def test_validation_findings_are_stored_as_the_messages_first_events(repository, make_message):
    """A message's findings become its events (at its status), in order, with the message; others get none."""
    found = make_message(
        0, status=Status.RECEIVED, findings=("validation E 101 PID-3: x", "validation W 103 PID-8: y")
    )
    first, second = repository.insert([found, make_message(1)])
    assert [(e.status, e.detail) for e in repository.get(first).events] == [
        ("RECEIVED", "validation E 101 PID-3: x"),
        ("RECEIVED", "validation W 103 PID-8: y"),
    ]
    assert repository.get(second).events == ()


def test_summary_json_and_message_type(repository, make_message):
    """to_json_dict() gives the summary's fields, type MSH-9 without an empty trigger, received_at in ISO."""
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


@pytest.mark.parametrize("destinations", [2, 2500], ids=["two", "more than PostgreSQL takes as parameters"])
def test_messages_processed_at_intake_keep_their_own_deliveries_in_a_group(
    repository, make_message, destinations
):
    """In a group each processed message gets its own deliveries and events; past 65,535 values too."""
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


# Duplicates


def test_find_duplicate_is_the_newest_accepted_message_of_the_sender_in_the_window(repository, make_message):
    """The newest not-REJECTED message of the sender and control id since ``since``, with its ACK; or None."""
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
    """A control id cut or without NULs when stored is found by the value sent; a missing ACK is None."""
    long_id = "7" * 250 + "\x00"
    [message_id] = repository.insert([make_message(0, control_id=long_id, ack=None)])
    assert repository.find_duplicate("LAB", "NORTH", long_id, since=T0) == (message_id, None)


def test_find_duplicate_refuses_a_naive_window(repository):
    """since must be timezone-aware."""
    with pytest.raises(ValueError):
        repository.find_duplicate("LAB", "NORTH", "C0", since=datetime(2024, 3, 1))


# Source files


def test_source_file_is_recorded_with_its_messages(engine, make_message):
    """insert() with a source file records it (message count, read time); unmoved_file() finds it by
    path, size and modification time only, until file_moved() records where it went."""
    repository = MessageRepository(engine, clock=lambda: T0)
    ids = repository.insert(
        [make_message(0), make_message(1)], source_file=SourceFile("/in/a.hl7", "a" * 64, 120, MTIME)
    )
    assert len(ids) == 2
    assert source_file_rows(engine) == [("/in/a.hl7", "a" * 64, 120, 2)]
    with engine.connect() as connection:
        assert connection.execute(sa.select(source_files.c.read_at)).scalar_one() == T0
    assert repository.unmoved_file("/in/a.hl7", 120, MTIME)
    others = [("/in/b.hl7", 120, MTIME), ("/in/a.hl7", 121, MTIME), ("/in/a.hl7", 120, MTIME + 1)]
    assert [repository.unmoved_file(*other) for other in others] == [False, False, False]
    repository.file_moved("/in/a.hl7", 120, MTIME, "/in/done/a.hl7")
    assert not repository.unmoved_file("/in/a.hl7", 120, MTIME)
    with engine.connect() as connection:
        assert connection.execute(sa.select(source_files.c.moved_to)).scalar_one() == "/in/done/a.hl7"


def test_an_empty_source_file_is_recorded_too(repository):
    """A file without messages is still recorded, so a crash before its move does not read it again."""
    assert repository.insert([], source_file=SourceFile("/in/empty.hl7", "e" * 64, 0, MTIME)) == []
    assert repository.unmoved_file("/in/empty.hl7", 0, MTIME)


def test_a_long_path_is_found_as_it_was_stored(repository):
    """A path longer than the column is cut when stored; looking it up and marking it moved cut it alike."""
    path = "/in/" + "x" * 1200 + ".hl7"
    repository.insert([], source_file=SourceFile(path, "e" * 64, 5, MTIME))
    assert repository.unmoved_file(path, 5, MTIME)
    repository.file_moved(path, 5, MTIME, "/in/done/x.hl7")
    assert not repository.unmoved_file(path, 5, MTIME)


def test_source_file_and_messages_are_stored_together_or_not_at_all(repository, make_message):
    """When a message cannot be stored, neither the messages nor the file record are."""
    with pytest.raises(StoreError):
        repository.insert(
            [make_message(0), make_message(1, received_at=datetime(2024, 3, 1, 12, 0))],
            source_file=SourceFile("/in/bad.hl7", "f" * 64, 9, MTIME),
        )
    assert repository.count() == 0
    assert not repository.unmoved_file("/in/bad.hl7", 9, MTIME)


def test_outcomes_are_those_of_the_settled_messages_with_what_their_deliveries_said(repository, make_message):
    """None yet for RECEIVED and QUEUED messages; a settled one's status, its deliveries' codes and reasons.

    FILTERED deliveries are not among them; a message filtered in processing has its own reason.
    """
    queues = QueueRepository(repository.engine, clock=lambda: NOW)
    received, waiting, settled, filtered = repository.insert([make_message(n) for n in range(4)])
    ids = queues.record_processing(
        [
            queued(waiting, "lab", "ris"),
            ProcessingResult(
                settled,
                Status.QUEUED,
                deliveries=(
                    NewDelivery("lab", Status.QUEUED, "OUT", b"MSH|lab\r"),
                    NewDelivery("ris", Status.QUEUED, "OUT", b"MSH|ris\r"),
                    NewDelivery("archive", Status.FILTERED, "OUT", None, "not for the archive"),
                ),
            ),
            ProcessingResult(filtered, Status.FILTERED, reason="test message"),
        ]
    )
    lab, ris = ids[2], ids[3]
    queues.record_attempts(
        [
            _attempt(ids[0], Outcome.SENT),
            _attempt(lab, Outcome.SENT, response_code="AA"),
            _attempt(ris, Outcome.ERROR, response_code="AE", reason="partner refused: PID-3"),
        ]
    )
    assert repository.outcomes([received, waiting, settled, filtered, 10**9]) == {
        settled: (
            Status.ERROR,
            "partner refused: PID-3",
            [
                DeliveryResult(Outcome.SENT, response_code="AA"),
                DeliveryResult(Outcome.ERROR, response_code="AE", reason="partner refused: PID-3"),
            ],
        ),
        filtered: (Status.FILTERED, "test message", []),
    }
    assert repository.outcomes([]) == {}


def _attempt(delivery_id: int, outcome: Outcome, **fields) -> AttemptResult:
    return AttemptResult(delivery_id, outcome, NOW, **fields)


def _index_plans(repository: MessageRepository, backend: str, read) -> list[str]:
    """The plans of the statements ``read(repository)`` sends with the status index's condition.

    PostgreSQL's with scans of the table off: whether the index can serve them at all, whatever a
    small table's costs would choose.
    """
    seen = []

    def capture(connection, cursor, statement, parameters, context, executemany):
        if STATUS_INDEX_WHERE in statement:
            seen.append((statement, parameters))

    sa.event.listen(repository.engine, "before_cursor_execute", capture)
    try:
        read(repository)
    finally:
        sa.event.remove(repository.engine, "before_cursor_execute", capture)
    plans = []
    with repository.engine.connect() as connection:
        if backend != "sqlite":
            connection.exec_driver_sql("SET enable_seqscan = off")
        explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
        for sql, parameters in seen:
            rows = connection.exec_driver_sql(explain + sql, parameters)
            plans.append("\n".join(str(row[-1]) for row in rows))
    return plans


@pytest.mark.parametrize(
    "status", [Status.ERROR, Status.QUEUED, Status.RECEIVED, Status.REJECTED, Status.FILTERED]
)
def test_a_search_for_a_status_the_partial_index_holds_reads_it(repository, make_message, backend, status):
    """Searching and counting by any status but TRANSFORMED and SENT read the status index (0024), as
    the dashboard's queued count does; those two are found by reading back from the newest."""
    usual = (Status.TRANSFORMED, Status.SENT)
    repository.insert([make_message(n, status=usual[n % 2]) for n in range(60)])
    repository.insert([make_message(60, status=status)])
    repository.insert([make_message(n, status=usual[n % 2]) for n in range(61, 90)])
    query = MessageQuery(status=status)
    assert [s.control_id for s in repository.search(query)] == ["C60"] and repository.count(query) == 1
    newest_sent = repository.search(MessageQuery(status=Status.SENT, limit=2))
    assert [s.control_id for s in newest_sent] == ["C89", "C87"]
    dashboard = DashboardRepository(repository.engine)
    reads = [lambda r: r.search(query), lambda r: r.count(query), lambda r: dashboard.counts(T0, ())]
    plans = [plan for read in reads for plan in _index_plans(repository, backend, read)]
    assert len(plans) == 3
    for plan in plans:
        assert "ix_messages_status" in plan, plan
