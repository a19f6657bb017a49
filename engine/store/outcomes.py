"""What became of messages whose senders wait for it (``respond: after_processing``), read from the store.

A process that does not deliver (its dispatchers run in another process) learns the outcome of
the messages its senders wait for here: one read for all of them, repeated while any waits.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from engine.model import DeliveryResult, Outcome, Status
from engine.store.driver import store_errors
from engine.store.schema import deliveries, messages

__all__ = ["Settled", "settled_outcomes"]

#: A message's final (status, reason, delivery results), as a channel's waiter is told.
Settled = tuple[Status, str, list[DeliveryResult]]

#: Statuses after which nothing more happens to a message on its own.
_UNSETTLED = (Status.RECEIVED, Status.QUEUED)


def settled_outcomes(engine: sa.Engine, message_ids: Sequence[int]) -> dict[int, Settled]:
    """The outcome of each of ``message_ids`` that is settled (processed, and its deliveries SENT or ERROR).

    Messages still RECEIVED or QUEUED (or not found) are left out. The reason is the deliveries'
    reasons, or the message's own error when no delivery says why (a filter or transform failed).
    """
    if not message_ids:
        return {}
    m, d = messages.c, deliveries.c
    settled = sa.select(m.id, m.status, m.error).where(
        m.id.in_(message_ids), m.status.not_in([str(s) for s in _UNSETTLED])
    )
    with store_errors("reading the outcome of messages"), engine.connect() as connection:
        found = {row.id: row for row in connection.execute(settled)}
        if not found:
            return {}
        current = (
            sa.select(d.message_id, d.status, d.response_code, d.reason)
            .where(
                d.message_id.in_(list(found)),
                d.superseded_at.is_(None),
                d.status.in_([str(Status.SENT), str(Status.ERROR)]),
            )
            .order_by(d.id)
        )
        results: dict[int, list[DeliveryResult]] = {message_id: [] for message_id in found}
        for row in connection.execute(current):
            results[row.message_id].append(
                DeliveryResult(Outcome(row.status), response_code=row.response_code, reason=row.reason)
            )
    outcomes = {}
    for message_id, row in found.items():
        reasons = "; ".join(r.reason for r in results[message_id] if r.reason)
        outcomes[message_id] = (Status(row.status), reasons or row.error, results[message_id])
    return outcomes
