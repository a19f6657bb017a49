"""Recording delivery attempts: each counted with its event, and the messages they settle given their status.

A destination's dispatcher decides each attempt's outcome (engine.model.Outcome) and its retry;
``record_attempts_in`` writes them inside ``QueueRepository.record_attempts``' transaction: the
deliveries' rows, an event per attempt, and the status of every message whose current deliveries are
now all final (engine.model.roll_up), so a message never shows SENT before its rows do.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from engine.model import AttemptResult, Outcome, Status, roll_up
from engine.store.cipher import Cipher
from engine.store.driver import Rows, Select, binds, by_id, fit_text
from engine.store.processing import INSERT_EVENTS, event_row, status_update
from engine.store.schema import deliveries, messages

__all__ = ["record_attempts_in"]

# The lengths fit_text cuts these columns' values to.
_DELIVERY_REASON, _DELIVERY_RESPONSE_CODE = (
    deliveries.c[name].type.length for name in ("reason", "response_code")
)
_MESSAGE_ERROR = messages.c.error.type.length

_SETTLE = status_update(messages.c.status == Status.QUEUED)  # the roll-up

# One UPDATE per outcome; every one counts the attempt and keeps the answer.
_ATTEMPT = ("updated_at", "reason", "response", "response_code")
_RECORD_ATTEMPT = {
    Outcome.SENT: Rows(
        by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, status=Status.SENT, **binds(deliveries, *_ATTEMPT, "sent_at")
        )
    ),
    Outcome.ERROR: Rows(
        by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, status=Status.ERROR, **binds(deliveries, *_ATTEMPT)
        )
    ),
    # RETRY leaves the status alone: a row superseded meanwhile stays out of its queue.
    Outcome.RETRY: Rows(
        by_id(deliveries).values(
            attempts=deliveries.c.attempts + 1, **binds(deliveries, *_ATTEMPT, "next_attempt_at")
        )
    ),
}


# After recording attempts: every delivery of the messages they touched, with the message's
# status, in one read (one round trip less on PostgreSQL). Run after the attempts' UPDATEs, in
# their transaction: on SQLite the write lock is held, on PostgreSQL FOR UPDATE locks the messages.
_TOUCHED = Select(
    sa.select(
        deliveries.c.id,
        deliveries.c.message_id,
        deliveries.c.destination,
        deliveries.c.status,
        deliveries.c.reason,
        deliveries.c.attempts,
        deliveries.c.superseded_at.is_(None),
        messages.c.status,
    )
    .join_from(deliveries, messages, deliveries.c.message_id == messages.c.id)
    .where(
        deliveries.c.message_id.in_(
            sa.select(deliveries.c.message_id).where(
                deliveries.c.id.in_(sa.bindparam("b_ids", type_=deliveries.c.id.type, expanding=True))
            )
        )
    )
    .order_by(deliveries.c.id)
    .with_for_update(of=messages),
    listed="ids",
)


def _attempt_values(result: AttemptResult, cipher: Cipher) -> dict:
    """The row of ``_RECORD_ATTEMPT[result.outcome]`` for one result, its response sealed with ``cipher``."""
    return {
        "id": result.delivery_id,
        "updated_at": result.at,
        "sent_at": result.at,
        "reason": fit_text(result.reason, _DELIVERY_REASON),
        "response": cipher.seal(result.response),
        "response_code": fit_text(result.response_code, _DELIVERY_RESPONSE_CODE),
        "next_attempt_at": result.next_attempt_at,
    }


def _attempt_detail(result: AttemptResult, attempt: int) -> str:
    """The event text of one attempt; RETRY says when the next one is due."""
    answer = f" (answer {result.response_code})" if result.response_code else ""
    if result.outcome == Outcome.SENT:
        return f"attempt {attempt} sent{answer}" + (f": {result.reason}" if result.reason else "")
    if result.in_doubt:
        return f"attempt {attempt} in doubt, possible duplicate: {result.reason}; next at " + (
            result.next_attempt_at.isoformat()
        )
    detail = f"attempt {attempt} failed{answer}: {result.reason}"
    if result.outcome == Outcome.RETRY:
        return f"{detail}; next at {result.next_attempt_at.isoformat()}"
    return detail


def _not_yet_recorded(connection: sa.Connection, results: Sequence[AttemptResult]) -> Sequence[AttemptResult]:
    """``results`` without the replayed ones (``attempt`` set) whose attempt the store already counts."""
    replayed = {r.delivery_id for r in results if r.attempt is not None}
    if not replayed:
        return results
    c = deliveries.c
    expected = dict(connection.execute(sa.select(c.id, c.attempts).where(c.id.in_(sorted(replayed)))).all())
    kept = []
    for result in results:
        if result.attempt is None:
            kept.append(result)
        elif expected.get(result.delivery_id) == result.attempt - 1:
            expected[result.delivery_id] = result.attempt
            kept.append(result)
    return kept


def _roll_up(
    connection: sa.Connection, settled: dict[int, datetime], touched: Sequence[tuple], events: list[dict]
) -> None:
    """Give each QUEUED message whose current deliveries are all final its status (engine.model.roll_up).

    ERROR if any is, else SENT if any is, else FILTERED. ``touched`` are the _TOUCHED rows: read
    under the lock, so the messages still QUEUED there are changed here.
    """
    by_message: dict[int, list[tuple[str, str, str]]] = {}
    for _, message_id, destination, status, reason, _, current, message_status in touched:
        if current and message_status == Status.QUEUED and message_id in settled:
            by_message.setdefault(message_id, []).append((destination, status, reason))
    changes = []
    for message_id, rows in by_message.items():
        status = roll_up(status for _, status, _ in rows)
        if status == Status.QUEUED:
            continue
        error = ""
        if status == Status.ERROR:
            error = detail = "; ".join(
                f"{destination}: {reason}" for destination, status_, reason in rows if status_ == Status.ERROR
            )
        elif status == Status.SENT:
            detail = "sent to " + ", ".join(d for d, status_, _ in rows if status_ == Status.SENT)
        else:
            detail = "filtered by every destination"
        at = settled[message_id]
        changes.append(
            {"id": message_id, "status": status, "status_at": at, "error": fit_text(error, _MESSAGE_ERROR)}
        )
        events.append(event_row(message_id, at, status, detail))
    if changes:
        _SETTLE.run(connection, changes)


def record_attempts_in(
    connection: sa.Connection, results: Sequence[AttemptResult], cipher: Cipher
) -> list[int]:
    """Record each attempt and its event, then settle the messages whose current deliveries are all final.

    Inside the caller's transaction; responses are sealed with ``cipher``. A replayed result
    (``attempt`` set) that the store already counts is skipped. Returns the ids of the deliveries
    the results named that the store does not hold (nothing was written for them).
    """
    events: list[dict] = []
    settled: dict[int, datetime] = {}
    unknown: list[int] = []
    results = _not_yet_recorded(connection, results)
    if not results:
        return []
    # Consecutive results with the same outcome share one statement (Rows), in the order given.
    for outcome, run in itertools.groupby(results, key=lambda r: r.outcome):
        _RECORD_ATTEMPT[outcome].run(connection, [_attempt_values(result, cipher) for result in run])
    touched = _TOUCHED.rows(connection, {"ids": sorted({r.delivery_id for r in results})})
    found = {
        delivery_id: (message_id, destination, attempts)
        for delivery_id, message_id, destination, _, _, attempts, _, _ in touched
    }
    # A delivery given twice counts two attempts: each event names its own number.
    given = collections.Counter(r.delivery_id for r in results)
    attempt = {delivery_id: attempts - given[delivery_id] for delivery_id, (_, _, attempts) in found.items()}
    for result in results:
        if result.delivery_id not in found:
            unknown.append(result.delivery_id)
            continue
        message_id, destination, _ = found[result.delivery_id]
        attempt[result.delivery_id] += 1
        status = Status.QUEUED if result.outcome == Outcome.RETRY else str(result.outcome)
        events.append(
            event_row(
                message_id,
                result.at,
                status,
                _attempt_detail(result, attempt[result.delivery_id]),
                destination,
            )
        )
        if result.outcome != Outcome.RETRY:
            settled[message_id] = max(result.at, settled.get(message_id, result.at))
    if settled:
        _roll_up(connection, settled, touched, events)
    if events:
        INSERT_EVENTS.run(connection, events)
    return unknown
