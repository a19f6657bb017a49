"""engine.store.queues: processing results, FIFO queues, attempts, resend and reprocess, both backends."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.model import (
    AttemptResult,
    NewDelivery,
    Outcome,
    ProcessingResult,
    ReceivedMessage,
    Status,
)
from engine.store.schema import message_events
from tests.fakes.messages import T0
from tests.fakes.store import NOW, queued


def _attempt(delivery_id: int, outcome: Outcome, at: datetime = NOW, **fields) -> AttemptResult:
    return AttemptResult(delivery_id, outcome, at, **fields)


@pytest.fixture
def received(repository, make_message):
    """``received(n)``: store n RECEIVED messages of channel ``adt``; their ids."""

    def store(count: int) -> list[int]:
        return repository.insert([make_message(n) for n in range(count)])

    return store


# Processing


def test_pending_for_processing_is_the_channels_received_messages_oldest_first(
    repository, queues, make_message
):
    """Only RECEIVED messages of the channel, ids above after_id, ascending, at most limit."""
    ids = repository.insert(
        [
            make_message(0),
            make_message(1, channel="other"),
            make_message(2, status=Status.REJECTED),
            make_message(3),
            make_message(4),
        ]
    )
    pending = queues.pending_for_processing("adt")
    assert [p.id for p in pending] == [ids[0], ids[3], ids[4]]
    assert pending[0] == ReceivedMessage(
        id=ids[0],
        channel="adt",
        raw=make_message(0).raw,
        charset="",
        control_id="C0",
        received_at=T0,
        sending_application="LAB",
        sending_facility="NORTH",
        message_code="ADT",
        trigger_event="A01",
    )
    assert [p.id for p in queues.pending_for_processing("adt", after_id=ids[0], limit=1)] == [ids[3]]
    assert queues.pending_for_processing("nothing") == []


def test_record_processing_stores_status_content_deliveries_and_events(repository, queues, received):
    """A QUEUED result sets status, transformed content, a delivery row per destination and events."""
    [message_id] = received(1)
    result = ProcessingResult(
        message_id,
        Status.QUEUED,
        transformed=b"MSH|transformed\r",
        deliveries=(
            NewDelivery("lab", Status.QUEUED, "OUT1", b"MSH|to lab\r"),
            NewDelivery("archive", Status.FILTERED, "C0", None, "not an A01"),
        ),
    )
    ids = queues.record_processing([result])
    stored = repository.get(message_id)
    assert (stored.status, stored.transformed, stored.error) == (Status.QUEUED, b"MSH|transformed\r", "")
    assert [
        (d.id, d.destination, d.status, d.attempts, d.payload, d.reason, d.created_at, d.next_attempt_at)
        for d in stored.deliveries
    ] == [
        (ids[0], "lab", "QUEUED", 0, b"MSH|to lab\r", "", NOW, NOW),
        (ids[1], "archive", "FILTERED", 0, None, "not an A01", NOW, NOW),
    ]
    assert [(e.at, e.status, e.destination, e.detail) for e in stored.events] == [
        (NOW, "QUEUED", None, ""),
        (NOW, "QUEUED", "lab", ""),
        (NOW, "FILTERED", "archive", "not an A01"),
    ]


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (ProcessingResult(0, Status.FILTERED, reason="test message"), "test message"),
        (ProcessingResult(0, Status.ERROR, reason="PID-3 is empty"), "PID-3 is empty"),
        (ProcessingResult(0, Status.TRANSFORMED, transformed=b"MSH|x\r"), ""),
    ],
)
def test_record_processing_without_deliveries(repository, queues, received, result, error):
    """FILTERED, ERROR and TRANSFORMED results need no delivery rows; the reason is the message's error."""
    [message_id] = received(1)
    result = ProcessingResult(message_id, result.status, result.reason, result.transformed)
    assert queues.record_processing([result]) == []
    stored = repository.get(message_id)
    assert (stored.status, stored.error, stored.transformed, stored.deliveries) == (
        result.status,
        error,
        result.transformed,
        (),
    )
    assert [(e.status, e.destination, e.detail) for e in stored.events] == [
        (result.status, None, result.reason)
    ]


def test_record_processing_returns_delivery_ids_in_order(queues, received):
    """The ids follow the results and their deliveries in the order given, increasing."""
    ids = received(3)
    delivery_ids = queues.record_processing([queued(ids[2], "lab", "ris"), queued(ids[0], "lab")])
    assert delivery_ids == sorted(delivery_ids) and len(delivery_ids) == 3
    due = queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=False)
    assert [(d.delivery_id, d.message_id) for d in due] == [
        (delivery_ids[0], ids[2]),
        (delivery_ids[2], ids[0]),
    ]


def test_record_processing_twice_changes_nothing(repository, queues, received):
    """A result for a message that is no longer RECEIVED is skipped: no second delivery, no new event."""
    first, second = received(2)
    queues.record_processing([queued(first, "lab")])
    before = repository.get(first)
    again = queues.record_processing(
        [ProcessingResult(first, Status.ERROR, reason="late"), queued(second, "lab"), queued(second, "lab")]
    )
    assert len(again) == 1
    assert repository.get(first) == before
    assert len(repository.get(second).deliveries) == 1
    assert queues.queue_depth("adt", "lab") == 2


# The queues


def test_due_deliveries_keep_fifo_order_per_destination(queues, received):
    """Each destination's due deliveries come in order of receipt, limit at a time, as first attempts."""
    ids = received(30)
    queues.record_processing([queued(i, "lab", "ris") for i in reversed(ids[:15])])
    queues.record_processing([queued(i, "lab", "ris") for i in ids[15:]])
    expected = list(reversed(ids[:15])) + ids[15:]
    for destination in ("lab", "ris"):
        due = queues.due_deliveries("adt", destination, now=NOW, limit=100, head_only=False)
        assert [d.message_id for d in due] == expected
        assert [d.delivery_id for d in due] == sorted(d.delivery_id for d in due)
        assert {(d.channel, d.destination, d.attempt, d.queued_at) for d in due} == {
            ("adt", destination, 1, NOW)
        }
        assert (
            due[0].payload == f"MSH|{expected[0]}|{destination}\r".encode()
            and due[0].control_id == f"OUT{expected[0]}"
        )
    assert [
        d.message_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=4, head_only=False)
    ] == expected[:4]
    assert (
        queues.due_deliveries("adt", "lab", now=NOW - timedelta(seconds=1), limit=100, head_only=False) == []
    )
    assert queues.due_deliveries("other", "lab", now=NOW, limit=100, head_only=False) == []


def test_head_only_waits_behind_a_head_not_yet_due(queues, received):
    """In block mode nothing is due while the head waits for its retry; skip mode goes on with the rest."""
    ids = received(3)
    head, second, third = queues.record_processing([queued(i, "lab") for i in ids])
    retry_at = NOW + timedelta(seconds=60)
    queues.record_attempts(
        [_attempt(head, Outcome.RETRY, reason="connection refused", next_attempt_at=retry_at)]
    )
    assert queues.due_deliveries("adt", "lab", now=NOW, limit=1, head_only=True) == []
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=False)
    ] == [second, third]
    assert queues.next_due_at("adt", "lab", head_only=True) == retry_at
    assert queues.next_due_at("adt", "lab") == NOW
    due = queues.due_deliveries("adt", "lab", now=retry_at, limit=5, head_only=True)
    assert [(d.delivery_id, d.attempt) for d in due] == [(head, 2), (second, 1), (third, 1)]
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=retry_at, limit=2, head_only=True)
    ] == [head, second]


def test_head_only_stops_at_the_first_row_not_due(queues, received):
    """In block mode the due run at the head ends before a row waiting for its retry: nothing overtakes it."""
    ids = received(4)
    first, second, third, fourth = queues.record_processing([queued(i, "lab") for i in ids])
    queues.record_attempts(
        [_attempt(third, Outcome.RETRY, reason="timeout", next_attempt_at=NOW + timedelta(seconds=60))]
    )
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=True)
    ] == [first, second]
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=False)
    ] == [first, second, fourth]


def test_next_due_at_of_an_empty_queue_is_none(queues, received):
    """A queue without QUEUED rows has no next due time, in either mode."""
    [message_id] = received(1)
    [delivery_id] = queues.record_processing([queued(message_id, "lab")])
    queues.record_attempts([_attempt(delivery_id, Outcome.SENT)])
    assert queues.next_due_at("adt", "lab") is None
    assert queues.next_due_at("adt", "lab", head_only=True) is None
    assert queues.next_due_at("adt", "nothing") is None


def test_retries_record_attempts_and_next_attempt(repository, queues, received):
    """RETRY counts the attempt and keeps the row QUEUED with its next time and reason; an event says so."""
    [message_id] = received(1)
    [delivery_id] = queues.record_processing([queued(message_id, "lab")])
    first_retry = NOW + timedelta(seconds=2)
    second_retry = NOW + timedelta(seconds=6)
    queues.record_attempts(
        [_attempt(delivery_id, Outcome.RETRY, reason="timeout", next_attempt_at=first_retry)]
    )
    queues.record_attempts(
        [
            _attempt(
                delivery_id,
                Outcome.RETRY,
                first_retry,
                response=b"MSA|AR\r",
                response_code="AR",
                reason="busy",
                next_attempt_at=second_retry,
            )
        ]
    )
    stored = repository.get(message_id)
    [delivery] = stored.deliveries
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.reason) == (
        "QUEUED",
        2,
        second_retry,
        "busy",
    )
    assert (delivery.response, delivery.response_code, delivery.sent_at) == (b"MSA|AR\r", "AR", None)
    assert stored.status == Status.QUEUED
    assert [(e.status, e.destination, e.detail) for e in stored.events[-2:]] == [
        ("QUEUED", "lab", f"attempt 1 failed: timeout; next at {first_retry.isoformat()}"),
        ("QUEUED", "lab", f"attempt 2 failed (answer AR): busy; next at {second_retry.isoformat()}"),
    ]
    [due] = queues.due_deliveries("adt", "lab", now=second_retry, limit=1, head_only=True)
    assert due.attempt == 3


def test_a_replayed_attempt_counts_only_once(repository, queues, received):
    """A result naming its attempt counts only if the delivery made one attempt fewer: no replay repeats."""
    [message_id] = received(1)
    lab, ris = queues.record_processing([queued(message_id, "lab", "ris")])
    queues.record_attempts([_attempt(lab, Outcome.SENT, response_code="AA")])
    later = NOW + timedelta(seconds=1)
    # The journal of a round already recorded (lab's attempt 1), and one not yet (ris's).
    queues.record_attempts(
        [
            _attempt(lab, Outcome.SENT, later, response_code="AA", attempt=1),
            _attempt(ris, Outcome.SENT, later, response_code="AA", attempt=1),
        ]
    )
    queues.record_attempts([_attempt(ris, Outcome.SENT, later, response_code="AA", attempt=1)])
    stored = repository.get(message_id)
    assert [(d.destination, d.status, d.attempts) for d in stored.deliveries] == [
        ("lab", "SENT", 1),
        ("ris", "SENT", 1),
    ]
    assert [(e.destination, e.detail) for e in stored.events[-3:]] == [
        ("lab", "attempt 1 sent (answer AA)"),
        ("ris", "attempt 1 sent (answer AA)"),
        (None, "sent to lab, ris"),
    ]


def test_an_attempt_in_doubt_stays_queued_and_says_possible_duplicate(repository, queues, received):
    """An attempt in doubt counts, keeps the delivery QUEUED and due; its event says "possible duplicate"."""
    [message_id] = received(1)
    [lab] = queues.record_processing([queued(message_id, "lab")])
    queues.record_attempts(
        [
            _attempt(
                lab, Outcome.RETRY, reason="stopped in flight", next_attempt_at=NOW, attempt=1, in_doubt=True
            )
        ]
    )
    stored = repository.get(message_id)
    [delivery] = stored.deliveries
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("QUEUED", 1, NOW)
    assert (stored.events[-1].destination, stored.events[-1].detail) == (
        "lab",
        f"attempt 1 in doubt, possible duplicate: stopped in flight; next at {NOW.isoformat()}",
    )
    [due] = queues.due_deliveries("adt", "lab", now=NOW, limit=1, head_only=True)
    assert due.attempt == 2


def test_sent_records_time_response_and_settles_the_message(repository, queues, received):
    """SENT stores sent_at and the response; the message becomes SENT once every destination is final."""
    [message_id] = received(1)
    lab, ris = queues.record_processing([queued(message_id, "lab", "ris")])
    done = NOW + timedelta(seconds=5)
    queues.record_attempts([_attempt(lab, Outcome.SENT, done, response=b"MSA|AA|OUT1\r", response_code="AA")])
    assert repository.get(message_id).status == Status.QUEUED
    queues.record_attempts([_attempt(ris, Outcome.SENT, done + timedelta(seconds=1), response_code="AA")])
    stored = repository.get(message_id)
    assert stored.status == Status.SENT
    assert [(d.status, d.attempts, d.sent_at, d.response) for d in stored.deliveries] == [
        ("SENT", 1, done, b"MSA|AA|OUT1\r"),
        ("SENT", 1, done + timedelta(seconds=1), None),
    ]
    assert [(e.status, e.destination, e.detail) for e in stored.events[-3:]] == [
        ("SENT", "lab", "attempt 1 sent (answer AA)"),
        ("SENT", "ris", "attempt 1 sent (answer AA)"),
        ("SENT", None, "sent to lab, ris"),
    ]
    assert stored.events[-1].at == done + timedelta(seconds=1)
    assert queues.queue_depths() == {}


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ((Outcome.SENT, Outcome.SENT), Status.SENT),
        ((Outcome.SENT, Outcome.ERROR), Status.ERROR),
        ((Outcome.ERROR, Outcome.ERROR), Status.ERROR),
        ((Outcome.SENT, Outcome.RETRY), Status.QUEUED),
        ((Outcome.ERROR, Outcome.RETRY), Status.QUEUED),
        ((Outcome.SENT, None), Status.SENT),
    ],
)
def test_message_status_rolls_up_from_its_deliveries(repository, queues, received, outcomes, status):
    """ERROR if any delivery failed, else SENT; QUEUED while one is queued; FILTERED ones do not count."""
    [message_id] = received(1)
    result = ProcessingResult(
        message_id,
        Status.QUEUED,
        deliveries=(
            NewDelivery("lab", Status.QUEUED, "C0", b"x"),
            NewDelivery("ris", Status.QUEUED, "C0", b"x")
            if outcomes[1]
            else NewDelivery("ris", Status.FILTERED, "C0", None, "no"),
            NewDelivery("archive", Status.FILTERED, "C0", None, "not wanted"),
        ),
    )
    delivery_ids = queues.record_processing([result])
    attempts = [
        _attempt(delivery_id, outcome, reason=f"{outcome} reason", next_attempt_at=NOW + timedelta(seconds=1))
        for delivery_id, outcome in zip(delivery_ids, outcomes)
        if outcome is not None
    ]
    queues.record_attempts(attempts)
    stored = repository.get(message_id)
    assert stored.status == status
    expected_error = (
        "; ".join(f"{d}: ERROR reason" for d, o in zip(("lab", "ris"), outcomes) if o == Outcome.ERROR)
        if status == Status.ERROR
        else ""
    )
    assert stored.error == expected_error


def test_a_message_whose_only_delivery_errors_is_error(repository, queues, received):
    """An ERROR delivery settles its message as ERROR, with the destination's reason as the error."""
    [message_id] = received(1)
    [delivery_id] = queues.record_processing([queued(message_id, "lab")])
    queues.record_attempts(
        [
            _attempt(
                delivery_id,
                Outcome.ERROR,
                response=b"MSA|AE\r",
                response_code="AE",
                reason="AE: unknown patient",
            )
        ]
    )
    stored = repository.get(message_id)
    assert (stored.status, stored.error) == (Status.ERROR, "lab: AE: unknown patient")
    [delivery] = stored.deliveries
    assert (delivery.status, delivery.attempts, delivery.response_code, delivery.response) == (
        "ERROR",
        1,
        "AE",
        b"MSA|AE\r",
    )
    assert stored.events[-2].detail == "attempt 1 failed (answer AE): AE: unknown patient"
    assert queues.due_deliveries("adt", "lab", now=NOW, limit=5, head_only=False) == []


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 9])
def test_a_run_of_any_length_settles_exactly_its_messages(repository, queues, received, length):
    """A run of attempts of any length (its read compiled per power of two) settles its messages, once."""
    ids = received(length + 1)
    delivery_ids = queues.record_processing([queued(i, "lab") for i in ids])
    queues.record_attempts(
        [_attempt(delivery_id, Outcome.SENT, response_code="AA") for delivery_id in delivery_ids[:length]]
    )
    assert [repository.get(i).status for i in ids] == [Status.SENT] * length + [Status.QUEUED]
    for message_id in ids[:length]:
        assert [(e.status, e.destination, e.detail) for e in repository.get(message_id).events[1:]] == [
            ("QUEUED", "lab", ""),
            ("SENT", "lab", "attempt 1 sent (answer AA)"),
            ("SENT", None, "sent to lab"),
        ]
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=True)
    ] == delivery_ids[length:]


def test_events_keep_the_order_given_across_multi_row_inserts(engine, queues, received):
    """300 events in one write (SQLite: INSERTs of 128, 128, 32, 8 and 4 rows) are stored whole, in order."""
    ids = received(150)
    queues.record_processing([queued(i, "lab") for i in ids])
    with engine.connect() as connection:
        stored = connection.execute(
            sa.select(message_events.c.message_id, message_events.c.destination).order_by(message_events.c.id)
        ).all()
    assert [tuple(row) for row in stored] == [(i, destination) for i in ids for destination in (None, "lab")]


def test_one_call_of_many_attempts_records_each_as_row_by_row(repository, queues, received):
    """Many attempts in one call (PostgreSQL: a statement a kind, from arrays) leave what calls each leave.

    The same delivery twice in one call (two RETRYs; a RETRY, then its SENT) counts two attempts,
    each with its event.
    """
    ids = received(6)
    delivery_ids = queues.record_processing([queued(i, "lab") for i in ids])
    later_at = NOW + timedelta(seconds=3)
    retry_at = NOW + timedelta(seconds=9)
    queues.record_attempts(
        [
            _attempt(
                d, Outcome.SENT, later_at, response=b"MSA|AA|" + str(d).encode() + b"\r", response_code="AA"
            )
            for d in delivery_ids[:3]
        ]
        + [_attempt(delivery_ids[3], Outcome.ERROR, response_code="AR", reason="refused x" + "\x00" * 2)]
        + [_attempt(delivery_ids[4], Outcome.RETRY, reason="busy", next_attempt_at=retry_at)] * 2
        + [
            _attempt(delivery_ids[5], Outcome.RETRY, reason="busy", next_attempt_at=retry_at),
            _attempt(delivery_ids[5], Outcome.SENT, later_at),
        ]
    )
    stored = [repository.get(i) for i in ids]
    assert [m.status for m in stored] == [Status.SENT] * 3 + [Status.ERROR, Status.QUEUED, Status.SENT]
    assert [
        (d.status, d.attempts, d.sent_at, d.response, d.response_code) for m in stored for d in m.deliveries
    ] == [("SENT", 1, later_at, f"MSA|AA|{d}\r".encode(), "AA") for d in delivery_ids[:3]] + [
        ("ERROR", 1, None, None, "AR"),
        ("QUEUED", 2, None, None, ""),
        ("SENT", 2, later_at, None, ""),
    ]
    assert stored[4].deliveries[0].next_attempt_at == retry_at
    assert [e.detail for e in stored[4].events[-2:]] == [
        f"attempt {n} failed: busy; next at {retry_at.isoformat()}" for n in (1, 2)
    ]
    assert "\x00" not in stored[3].error and stored[3].error.startswith("lab: refused x")
    assert [(e.status, e.detail) for e in stored[5].events[-3:]] == [
        ("QUEUED", f"attempt 1 failed: busy; next at {retry_at.isoformat()}"),
        ("SENT", "attempt 2 sent"),
        ("SENT", "sent to lab"),
    ]


def test_attempts_for_unknown_deliveries_are_dropped(repository, queues, received):
    """An attempt for a delivery id that does not exist is skipped; the others in the call are recorded."""
    [message_id] = received(1)
    [delivery_id] = queues.record_processing([queued(message_id, "lab")])
    queues.record_attempts([_attempt(delivery_id + 1000, Outcome.SENT), _attempt(delivery_id, Outcome.SENT)])
    assert repository.get(message_id).status == Status.SENT


def test_queue_depths_count_queued_rows_per_destination(queues, received):
    """queue_depth counts a destination's QUEUED rows, due or not; queue_depths lists non-empty queues."""
    ids = received(4)
    delivery_ids = queues.record_processing([queued(i, "lab", "ris") for i in ids])
    queues.record_attempts(
        [
            _attempt(delivery_ids[0], Outcome.SENT),
            _attempt(delivery_ids[1], Outcome.RETRY, next_attempt_at=NOW + timedelta(hours=1)),
        ]
    )
    assert (
        queues.queue_depth("adt", "lab"),
        queues.queue_depth("adt", "ris"),
        queues.queue_depth("adt", "x"),
    ) == (3, 4, 0)
    assert queues.queue_depths() == {("adt", "lab"): 3, ("adt", "ris"): 4}


def test_text_is_fitted_but_names_are_kept(repository, queues, received):
    """Reasons lose NULs and control ids are cut to their column, as message header copies are."""
    [message_id] = received(1)
    delivery = NewDelivery("lab", Status.FILTERED, "9" * 300, None, "bad\x00byte")
    queues.record_processing(
        [ProcessingResult(message_id, Status.FILTERED, reason="x\x00y", deliveries=(delivery,))]
    )
    [stored] = repository.get(message_id).deliveries
    assert (stored.reason, stored.destination) == ("badbyte", "lab")
    assert repository.get(message_id).events[0].detail == "xy"


# Resend and reprocess


def test_resend_queues_copies_at_the_tail_and_keeps_history(repository, queues, received):
    """resend() queues the current payload again behind everything queued; old rows stay, superseded."""
    ids = received(3)
    first_lab, first_ris, *others = queues.record_processing([queued(i, "lab", "ris") for i in ids])
    queues.record_attempts(
        [_attempt(first_lab, Outcome.SENT), _attempt(first_ris, Outcome.ERROR, reason="AE")]
    )
    assert repository.get(ids[0]).status == Status.ERROR
    new_ids = queues.resend([ids[0]])
    assert len(new_ids) == 2 and min(new_ids) > max(others)
    stored = repository.get(ids[0])
    assert stored.status == Status.QUEUED
    assert [(d.destination, d.status, d.superseded_at, d.payload) for d in stored.deliveries] == [
        ("lab", "SENT", NOW, f"MSH|{ids[0]}|lab\r".encode()),
        ("ris", "ERROR", NOW, f"MSH|{ids[0]}|ris\r".encode()),
        ("lab", "QUEUED", None, f"MSH|{ids[0]}|lab\r".encode()),
        ("ris", "QUEUED", None, f"MSH|{ids[0]}|ris\r".encode()),
    ]
    assert [(e.status, e.destination, e.detail) for e in stored.events[-3:]] == [
        ("QUEUED", None, "resent by operator"),
        ("QUEUED", "lab", "resent by operator"),
        ("QUEUED", "ris", "resent by operator"),
    ]
    lab_queue = queues.due_deliveries("adt", "lab", now=NOW, limit=10, head_only=False)
    assert [d.message_id for d in lab_queue] == [ids[1], ids[2], ids[0]]
    assert lab_queue[-1].attempt == 1
    queues.record_attempts([_attempt(new_id, Outcome.SENT) for new_id in new_ids])
    assert repository.get(ids[0]).status == Status.SENT


def test_resend_to_one_destination(repository, queues, received):
    """With a destination, only that destination's delivery is queued again."""
    [message_id] = received(1)
    lab, ris = queues.record_processing([queued(message_id, "lab", "ris")])
    queues.record_attempts([_attempt(lab, Outcome.SENT), _attempt(ris, Outcome.SENT)])
    [new_id] = queues.resend([message_id], destination="ris")
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "ris", now=NOW, limit=5, head_only=False)
    ] == [new_id]
    assert queues.queue_depth("adt", "lab") == 0
    assert queues.resend([message_id], destination="nowhere") == []


def test_resend_of_a_queued_delivery_takes_the_old_one_out_of_the_queue(repository, queues, received):
    """Resending a delivery still queued leaves one queued copy: the old row ends as ERROR, superseded."""
    [message_id] = received(1)
    [old] = queues.record_processing([queued(message_id, "lab")])
    [new] = queues.resend([message_id])
    assert [
        d.delivery_id for d in queues.due_deliveries("adt", "lab", now=NOW, limit=5, head_only=False)
    ] == [new]
    old_row = repository.get(message_id).deliveries[0]
    assert (old_row.id, old_row.status, old_row.reason, old_row.superseded_at) == (
        old,
        "ERROR",
        "superseded by resend",
        NOW,
    )


def test_resend_skips_what_has_nothing_to_send(repository, queues, received, make_message):
    """Filtered deliveries, unprocessed, rejected and unknown messages are not resent."""
    filtered, unprocessed = received(2)
    [rejected] = repository.insert([make_message(9, status=Status.REJECTED, channel=None)])
    queues.record_processing(
        [
            ProcessingResult(
                filtered, Status.FILTERED, deliveries=(NewDelivery("lab", Status.FILTERED, "C", None, "no"),)
            )
        ]
    )
    assert queues.resend([filtered, unprocessed, rejected, 424242]) == []
    assert queues.resend([]) == []
    assert repository.get(filtered).status == Status.FILTERED


def test_reprocess_sends_messages_through_their_channel_again(repository, queues, received, make_message):
    """reprocess() puts messages back to RECEIVED; old queued deliveries leave the queue; new ones count."""
    ids = received(3)
    [rejected] = repository.insert([make_message(9, status=Status.REJECTED, channel=None)])
    lab0, ris0, *_ = queues.record_processing([queued(ids[0], "lab", "ris"), queued(ids[1], "lab", "ris")])
    queues.record_attempts([_attempt(lab0, Outcome.SENT), _attempt(ris0, Outcome.ERROR, reason="AE")])
    assert queues.reprocess([ids[0], ids[1], ids[2], rejected, 424242]) == 2
    assert [p.id for p in queues.pending_for_processing("adt")] == ids
    assert queues.queue_depths() == {}
    stored = repository.get(ids[1])
    assert (stored.status, stored.error) == (Status.RECEIVED, "")
    assert [(d.status, d.reason, d.superseded_at) for d in stored.deliveries] == [
        ("ERROR", "superseded by reprocess", NOW)
    ] * 2
    assert [(e.status, e.destination, e.detail) for e in stored.events[-3:]] == [
        ("RECEIVED", None, "reprocess requested"),
        ("ERROR", "lab", "superseded by reprocess"),
        ("ERROR", "ris", "superseded by reprocess"),
    ]
    # The channel changed meanwhile: only lab now; the old ris ERROR no longer counts.
    [new_lab] = queues.record_processing([queued(ids[0], "lab")])
    queues.record_attempts([_attempt(new_lab, Outcome.SENT)])
    assert repository.get(ids[0]).status == Status.SENT
    assert queues.reprocess([rejected]) == 0 and queues.reprocess([]) == 0


def test_attempts_on_superseded_deliveries_do_not_requeue(repository, queues, received):
    """A late SENT on a superseded row is kept as history; a late RETRY does not put it back in the queue."""
    [message_id] = received(1)
    lab, ris = queues.record_processing([queued(message_id, "lab", "ris")])
    queues.reprocess([message_id])
    queues.record_attempts([_attempt(lab, Outcome.SENT), _attempt(ris, Outcome.RETRY, next_attempt_at=NOW)])
    stored = repository.get(message_id)
    assert stored.status == Status.RECEIVED
    assert [d.status for d in stored.deliveries] == ["SENT", "ERROR"]
    assert queues.queue_depths() == {}
