"""The dashboard's counts, read from the store so that they survive a restart and agree across nodes.

Over a window (since a time): the messages each listener and channel received, by their status now
(``messages.received_at``, indexed), and what each destination settled in it (``deliveries.updated_at``,
indexed since 0017: SENT, ERROR and FILTERED rows). Now: each queue's depth, its head (oldest queued
message, its attempts so far and the reason of the last), and the destination's last error. A
reason names codes and causes, never message content (engine.channels.destinations.policy).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime

import sqlalchemy as sa

from engine.model import Status, require_aware, utc_now
from engine.store.driver import store_errors
from engine.store.reads import SETTLED, DashboardCounts, QueueState, dashboard_counts, status_index_term
from engine.store.schema import deliveries, messages

__all__ = ["DashboardRepository"]

# The status index's condition, so that the queued count reads it (engine.store.reads.INDEXED_STATUSES).
_QUEUED_INDEXED = sa.text(status_index_term(Status.QUEUED))


class DashboardRepository:
    """Blocking reads of the dashboard's counts, as plain data; never on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def counts(self, since: datetime, queues: Iterable[tuple[str, str]]) -> DashboardCounts:
        """The counts since ``since``, with the state of each (channel, destination) queue of ``queues``."""
        require_aware(since, "since")
        m, d = messages.c, deliveries.c
        received = (
            sa.select(m.listener, m.channel, m.status, sa.func.count(), sa.func.max(m.received_at))
            .where(m.received_at >= since)
            .group_by(m.listener, m.channel, m.status)
        )
        settled = (
            sa.select(d.channel, d.destination, d.status, sa.func.count())
            .where(d.updated_at >= since, d.status.in_(SETTLED))
            .group_by(d.channel, d.destination, d.status)
        )
        with store_errors("reading the dashboard's counts"), self._engine.connect() as connection:
            channels_queued = dict(
                connection.execute(
                    sa.select(m.channel, sa.func.count())
                    .where(m.channel.is_not(None), m.status == Status.QUEUED, _QUEUED_INDEXED)
                    .group_by(m.channel)
                ).all()
            )
            return dashboard_counts(
                since,
                self._clock,
                connection.execute(received).all(),
                connection.execute(settled).all(),
                channels_queued,
                queues,
                functools.partial(_queue_state, connection),
            )


def _queue_state(connection: sa.Connection, channel: str, destination: str, settled: dict) -> QueueState:
    """One queue's depth, head and last error: each read through the queue's index."""
    d = deliveries.c
    of_queue = (d.channel == channel, d.destination == destination)
    depth = connection.execute(
        sa.select(sa.func.count()).where(*of_queue, d.status == Status.QUEUED)
    ).scalar_one()
    head = connection.execute(
        sa.select(d.created_at, d.attempts, d.reason)
        .where(*of_queue, d.status == Status.QUEUED)
        .order_by(d.id)
        .limit(1)
    ).first()
    error = connection.execute(
        sa.select(d.reason, d.updated_at)
        .where(*of_queue, d.status == Status.ERROR)
        .order_by(d.id.desc())
        .limit(1)
    ).first()
    return QueueState(
        depth=depth,
        oldest_queued_at=head.created_at if head else None,
        head_attempts=head.attempts if head else 0,
        head_reason=head.reason if head else "",
        last_error=error.reason if error else "",
        last_error_at=error.updated_at if error else None,
        settled=dict(settled),
    )
