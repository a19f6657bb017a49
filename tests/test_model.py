"""engine/model.py: the one roll-up rule of statuses, and the domain values that refuse to be inconsistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.model import (
    AttemptResult,
    NewDelivery,
    Outcome,
    ProcessingResult,
    Status,
    require_aware,
    roll_up,
    utc_now,
)

NOW = datetime(2024, 3, 2, 8, 0, tzinfo=UTC)

QUEUED, FILTERED, SENT, ERROR = Status.QUEUED, Status.FILTERED, Status.SENT, Status.ERROR


@pytest.mark.parametrize(
    ("statuses", "status"),
    [
        ((), Status.TRANSFORMED),
        ((QUEUED,), QUEUED),
        ((SENT, ERROR, FILTERED, QUEUED), QUEUED),
        ((ERROR,), ERROR),
        ((SENT, FILTERED, ERROR), ERROR),
        ((SENT,), SENT),
        ((FILTERED, SENT, FILTERED), SENT),
        ((FILTERED,), FILTERED),
        ((FILTERED, FILTERED), FILTERED),
    ],
)
def test_roll_up_gives_the_message_the_status_of_its_deliveries(statuses, status):
    """None: TRANSFORMED; any QUEUED: QUEUED; else any ERROR: ERROR; else any SENT: SENT; else FILTERED."""
    assert roll_up(statuses) == status
    assert roll_up(str(s) for s in reversed(statuses)) == status  # the store's text, in any order, once


@pytest.mark.parametrize(
    "build",
    [
        lambda: ProcessingResult(1, Status.SENT),
        lambda: ProcessingResult(1, Status.QUEUED),
        lambda: ProcessingResult(
            1, Status.FILTERED, deliveries=(NewDelivery("lab", Status.QUEUED, "C", b"x"),)
        ),
        lambda: ProcessingResult(
            1, Status.TRANSFORMED, deliveries=(NewDelivery("lab", Status.FILTERED, "C", None),)
        ),
        lambda: NewDelivery("lab", Status.SENT, "C", b"x"),
        lambda: NewDelivery("lab", Status.QUEUED, "C", None),
        lambda: NewDelivery("", Status.ERROR, "C", None),
        lambda: NewDelivery("x" * 101, Status.ERROR, "C", None),
        lambda: AttemptResult(1, Outcome.SENT, datetime(2024, 3, 1)),
        lambda: AttemptResult(1, Outcome.RETRY, NOW),
        lambda: AttemptResult(1, "LATER", NOW),
        lambda: AttemptResult(1, Outcome.SENT, NOW, in_doubt=True),
    ],
)
def test_inconsistent_results_are_refused(build):
    """Statuses at odds, queued deliveries without payload, bad names or times, SENT in doubt: ValueError."""
    with pytest.raises(ValueError):
        build()


def test_a_result_keeps_its_deliveries_as_a_tuple_and_an_attempt_its_outcome_as_an_outcome():
    """Deliveries given as a list become a tuple; an outcome given as text becomes an Outcome."""
    delivery = NewDelivery("lab", QUEUED, "C", b"x")
    assert ProcessingResult(1, QUEUED, deliveries=[delivery]).deliveries == (delivery,)
    assert AttemptResult(1, "RETRY", NOW, next_attempt_at=NOW + timedelta(seconds=5)).outcome is Outcome.RETRY


def test_only_aware_times_are_accepted_and_now_is_utc():
    """require_aware names the naive time it refuses; utc_now is aware and in UTC."""
    require_aware(datetime(2024, 3, 1, 12, tzinfo=timezone(timedelta(hours=-5))), "at")
    with pytest.raises(ValueError, match="next_attempt_at must be timezone-aware"):
        require_aware(datetime(2024, 3, 1, 12), "next_attempt_at")
    assert utc_now().utcoffset() == timedelta(0)
