"""engine.store.outcomes: the settled outcome of waiting messages, read by a process that does not deliver."""

from __future__ import annotations

from engine.model import AttemptResult, NewDelivery, Outcome, Status, utc_now
from engine.store.messages import MessageRepository
from engine.store.outcomes import settled_outcomes
from engine.store.queues import QueueRepository
from tests.fakes.messages import new_message

RAW = b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C%d|P|2.5.1\rPID|1||1^^^PMS^MR\r"


def _queued(n: int):
    raw = RAW % n
    delivery = NewDelivery("emr", Status.QUEUED, f"C{n}", raw)
    return new_message(raw, status=Status.QUEUED, deliveries=(delivery,))


def test_only_settled_messages_are_told_with_their_deliveries_outcomes(engine):
    """RECEIVED and QUEUED messages are left out; SENT and ERROR come with each delivery's result."""
    failed = NewDelivery("emr", Status.ERROR, "C4", None, reason="transform failed at PID-3")
    ids = MessageRepository(engine).insert(
        [
            new_message(RAW % 1),  # RECEIVED
            _queued(2),
            _queued(3),
            new_message(RAW % 4, status=Status.ERROR, deliveries=(failed,)),
            new_message(RAW % 5, status=Status.FILTERED, error=""),
        ]
    )
    queues = QueueRepository(engine)
    [delivery] = queues.due_deliveries("adt", "emr", now=utc_now(), limit=1, head_only=True)
    assert delivery.message_id == ids[1]
    queues.record_attempts([AttemptResult(delivery.delivery_id, Outcome.SENT, utc_now(), response_code="AA")])

    found = settled_outcomes(engine, [*ids, 999_999])
    assert set(found) == {ids[1], ids[3], ids[4]}
    status, reason, results = found[ids[1]]
    assert (status, reason, [(r.outcome, r.response_code) for r in results]) == (
        Status.SENT,
        "",
        [(Outcome.SENT, "AA")],
    )
    status, reason, results = found[ids[3]]
    assert (status, reason, [r.outcome for r in results]) == (
        Status.ERROR,
        "transform failed at PID-3",
        [Outcome.ERROR],
    )
    assert found[ids[4]] == (Status.FILTERED, "", [])
    assert settled_outcomes(engine, []) == {}
