"""Channels in the store: processing results, the destination queues, resend and reprocess.

A channel's runner takes its RECEIVED messages in id order (``pending_for_processing``) and
records what its filters and transforms made of each one, with one delivery row per destination
(``record_processing``). A destination's queue is its QUEUED delivery rows in id order, which is
the order of receipt; its dispatcher takes what is due (``due_deliveries``) and records every
attempt (``record_attempts``, written by engine.store.attempts). Retry policy (backoff, giving up)
belongs to the dispatcher: the store only records what it decided.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from twisted.logger import Logger

from engine.model import (
    AttemptResult,
    Delivery,
    LeaseToken,
    ProcessingResult,
    ReceivedMessage,
    Status,
    require_aware,
    utc_now,
)
from engine.store.attempts import record_attempts_in
from engine.store.cipher import cipher_of
from engine.store.driver import Select, fit_text, store_errors
from engine.store.leases import hold_in
from engine.store.processing import (
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    INSERT_EVENTS,
    delivery_row,
    event_row,
    processing_rows,
    status_update,
)
from engine.store.schema import deliveries, messages

log = Logger(namespace="engine.store")


_RECEIVED_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(ReceivedMessage))
_RAW = [column.name for column in _RECEIVED_COLUMNS].index("raw")  # opened when read (sealed content)
_QUEUE_COLUMNS = tuple(
    deliveries.c[name]
    for name in (
        "id",
        "message_id",
        "channel",
        "destination",
        "control_id",
        "payload",
        "attempts",
        "created_at",
        "next_attempt_at",
    )
)
_INSERT_DELIVERIES = sa.insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)


_MESSAGE_ERROR = messages.c.error.type.length  # what fit_text cuts an error to

# The claim (the WHERE on status): every still-RECEIVED message of a batch at once, locked until
# commit. It takes the rows and writes no status: _SET_RESULT does, in the same transaction.
_CLAIM = (
    sa.update(messages)
    .where(messages.c.id.in_(sa.bindparam("ids", expanding=True)), messages.c.status == Status.RECEIVED)
    .values(status_at=sa.bindparam("now", type_=messages.c.status_at.type))
    .returning(messages.c.id, messages.c.channel)
)


_SET_RESULT = status_update(also=("transformed",))  # record_processing, after _CLAIM
_SET_STATUS = status_update()  # resend: back to QUEUED


def _queue(*columns: sa.ColumnElement) -> sa.Select:
    """The QUEUED rows of the queue the ``channel`` and ``destination`` keys name, oldest first."""
    c = deliveries.c
    where = (
        c.channel == sa.bindparam("b_channel", type_=c.channel.type),
        c.destination == sa.bindparam("b_destination", type_=c.destination.type),
        c.status == Status.QUEUED,
    )
    return sa.select(*columns).where(*where).order_by(c.id)


# Read statements are built once: building and caching one per call cost more than running it.
_PENDING = (
    sa.select(*_RECEIVED_COLUMNS)
    .where(
        messages.c.channel == sa.bindparam("channel"),
        messages.c.status == Status.RECEIVED,
        messages.c.id > sa.bindparam("after_id"),
    )
    .order_by(messages.c.id)
    .limit(sa.bindparam("limit"))
)
_LIMIT = sa.bindparam("b_limit", type_=sa.Integer())
_HEAD_RUN = Select(_queue(*_QUEUE_COLUMNS).limit(_LIMIT))
_DUE = Select(
    _queue(*_QUEUE_COLUMNS)
    .where(deliveries.c.next_attempt_at <= sa.bindparam("b_now", type_=deliveries.c.next_attempt_at.type))
    .limit(_LIMIT)
)
_HEAD_DUE_AT = Select(_queue(deliveries.c.next_attempt_at).limit(1))
_EARLIEST_DUE_AT = Select(_queue(sa.func.min(deliveries.c.next_attempt_at)).order_by(None))


def _supersede(
    connection: sa.Connection, rows: Sequence[sa.Row], now: datetime, reason: str, events: list[dict]
) -> None:
    """Keep ``rows`` (id, message_id, destination, status) as history; a still-QUEUED one leaves as ERROR."""
    c = deliveries.c
    connection.execute(
        sa.update(deliveries).where(c.id.in_([r.id for r in rows])).values(superseded_at=now, updated_at=now)
    )
    queued = [r for r in rows if r.status == Status.QUEUED]
    if queued:
        connection.execute(
            sa.update(deliveries)
            .where(c.id.in_([r.id for r in queued]))
            .values(status=Status.ERROR, reason=reason)
        )
        events.extend(event_row(r.message_id, now, Status.ERROR, reason, r.destination) for r in queued)


class QueueRepository:
    """Blocking reads and writes of processing results and destination queues, as plain data.

    Never call it on the reactor thread.
    """

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock
        self._cipher = cipher_of(engine)

    def pending_for_processing(
        self, channel: str, *, after_id: int = 0, limit: int = 500
    ) -> list[ReceivedMessage]:
        """The channel's RECEIVED messages with ids above ``after_id``, oldest first, at most ``limit``."""
        _check_limit(limit)
        with store_errors("reading messages to process"), self._engine.connect() as connection:
            rows = connection.execute(_PENDING, {"channel": channel, "after_id": after_id, "limit": limit})
            opened = self._cipher.open
            return [ReceivedMessage(*row[:_RAW], opened(row[_RAW]), *row[_RAW + 1 :]) for row in rows]

    def record_processing(
        self, results: Sequence[ProcessingResult], lease: LeaseToken | None = None
    ) -> list[int]:
        """Record each result with its deliveries and events in one transaction; new delivery ids in order.

        Only messages still RECEIVED change: a result for a message processed meanwhile (a crash
        race, another engine) is skipped with its deliveries, so the list is shorter by those.
        ``lease``: the channel's, when processing is shared; LeaseLost if no longer held (nothing written).
        """
        if not results:
            return []
        now = self._clock()
        rows: list[tuple] = []
        events: list[tuple] = []
        changes: list[dict] = []
        skipped: list[int] = []
        with store_errors("recording processing results"):
            # TRANSACTION: each message's new status and transformed content, its deliveries and
            # their events: a message is either fully processed (its lease still held) or RECEIVED.
            with self._engine.begin() as connection:
                hold_in(connection, lease)
                # The claim: only messages still RECEIVED, once each (a concurrent or repeated claim
                # gets nothing).
                claimed = {
                    row.id: row.channel
                    for row in connection.execute(
                        _CLAIM, {"ids": sorted({r.message_id for r in results}), "now": now}
                    )
                }
                for result in results:
                    if result.message_id not in claimed:
                        skipped.append(result.message_id)
                        continue
                    channel = claimed.pop(result.message_id)
                    changes.append(
                        {
                            "id": result.message_id,
                            "status": result.status,
                            "status_at": now,
                            "error": fit_text(result.reason, _MESSAGE_ERROR),
                            "transformed": self._cipher.seal(result.transformed),
                        }
                    )
                    processing_rows(
                        result.message_id,
                        channel,
                        result.status,
                        result.reason,
                        result.deliveries,
                        now,
                        rows,
                        events,
                        self._cipher,
                    )
                if changes:
                    _SET_RESULT.run(connection, changes)
                if rows:
                    named = [dict(zip(DELIVERY_COLUMNS, row)) for row in rows]
                    ids = list(connection.execute(_INSERT_DELIVERIES, named).scalars())
                else:
                    ids = []
                if events:
                    INSERT_EVENTS.run(connection, [dict(zip(EVENT_COLUMNS, event)) for event in events])
        if skipped:
            log.warn(
                "skipped processing results of messages no longer RECEIVED: {message_ids}",
                message_ids=skipped,
            )
        return ids

    def due_deliveries(
        self, channel: str, destination: str, *, now: datetime, limit: int, head_only: bool
    ) -> list[Delivery]:
        """At most ``limit`` QUEUED deliveries due at ``now``, in queue order.

        With ``head_only`` they are the head of the queue and the rows right behind it, up to the
        first that is not due: nothing overtakes a row waiting for its retry (nothing at all while
        the head waits). Without it, every due row counts, wherever it stands.
        """
        require_aware(now, "now")
        _check_limit(limit)
        statement, parameters = (_HEAD_RUN, {}) if head_only else (_DUE, {"now": now})
        with store_errors("reading a destination queue"), self._engine.connect() as connection:
            rows = statement.rows(
                connection, {"channel": channel, "destination": destination, "limit": limit, **parameters}
            )
        due = []
        for (
            delivery_id,
            message_id,
            channel_,
            destination_,
            control_id,
            payload,
            attempts,
            created_at,
            next_attempt_at,
        ) in rows:
            if next_attempt_at > now:
                break
            due.append(
                Delivery(
                    delivery_id,
                    message_id,
                    channel_,
                    destination_,
                    control_id,
                    self._cipher.open(payload),
                    attempts + 1,
                    created_at,
                )
            )
        return due

    def next_due_at(self, channel: str, destination: str, *, head_only: bool = False) -> datetime | None:
        """When due_deliveries with the same ``head_only`` will next return something; None when empty.

        That is the earliest next attempt, or the head's.
        """
        statement = _HEAD_DUE_AT if head_only else _EARLIEST_DUE_AT
        with store_errors("reading a destination queue"), self._engine.connect() as connection:
            rows = statement.rows(connection, {"channel": channel, "destination": destination})
        return rows[0][0] if rows else None

    def record_attempts(self, results: Sequence[AttemptResult], lease: LeaseToken | None = None) -> None:
        """Record each attempt and its event, then settle messages whose current deliveries are all final.

        One transaction; with ``lease`` (the queue's, when delivery is shared) only while it is still
        held, else LeaseLost and nothing written.
        Every result counts as an attempt, except a replayed one (``attempt`` set) that the store
        already counts. SENT is recorded even on a row a resend or reprocess
        superseded meanwhile (it did go out); RETRY never puts a superseded row back in its queue.
        """
        if not results:
            return
        with store_errors("recording delivery attempts"):
            # TRANSACTION: each attempt's outcome and event, and the final status of every message
            # whose deliveries are now all final, so a message never shows SENT before its rows do
            # (and the lease the attempts were made under still held).
            with self._engine.begin() as connection:
                hold_in(connection, lease)
                unknown = record_attempts_in(connection, results, self._cipher)
        if unknown:
            log.warn(
                "attempt results for unknown deliveries were dropped: {delivery_ids}", delivery_ids=unknown
            )

    def queue_depth(self, channel: str, destination: str) -> int:
        """How many deliveries the destination's queue holds (QUEUED, due or not)."""
        c = deliveries.c
        statement = sa.select(sa.func.count()).where(
            c.channel == channel, c.destination == destination, c.status == Status.QUEUED
        )
        with store_errors("counting a destination queue"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    def queue_depths(self) -> dict[tuple[str, str], int]:
        """The depth of every queue that holds something, by (channel, destination)."""
        c = deliveries.c
        statement = (
            sa.select(c.channel, c.destination, sa.func.count())
            .where(c.status == Status.QUEUED)
            .group_by(c.channel, c.destination)
        )
        with store_errors("counting destination queues"), self._engine.connect() as connection:
            return {
                (channel, destination): depth for channel, destination, depth in connection.execute(statement)
            }

    def resend(self, message_ids: Sequence[int], *, destination: str | None = None) -> list[int]:
        """Queue again the current delivery of each message that has a payload; returns the new delivery ids.

        To every destination, or only ``destination``. The copies go to the tail of their queues,
        in the order of the rows they replace; the old
        rows stay as history (a still-QUEUED one leaves its queue as ERROR, so nothing goes twice).
        """
        if not message_ids:
            return []
        now = self._clock()
        c = deliveries.c
        criteria = [c.message_id.in_(list(message_ids)), c.superseded_at.is_(None), c.payload.is_not(None)]
        if destination is not None:
            criteria.append(c.destination == destination)
        current = (
            sa.select(c.id, c.message_id, c.channel, c.destination, c.status, c.control_id, c.payload)
            .where(*criteria)
            .order_by(c.id)
        )
        events: list[dict] = []
        with store_errors("resending messages"):
            # TRANSACTION: the new queued deliveries, the rows they replace, the messages back to
            # QUEUED and the events: a resend happens whole or not at all.
            with self._engine.begin() as connection:
                old = connection.execute(current).all()
                if not old:
                    return []
                _supersede(connection, old, now, "superseded by resend", events)
                rows = [
                    delivery_row(
                        r.message_id,
                        r.channel,
                        r.destination,
                        Status.QUEUED,
                        r.control_id,
                        r.payload,
                        "",
                        now,
                    )
                    for r in old
                ]
                ids = list(connection.execute(_INSERT_DELIVERIES, rows).scalars())
                resent = sorted({r.message_id for r in old})
                _SET_STATUS.run(
                    connection,
                    [
                        {"id": message_id, "status": Status.QUEUED, "status_at": now, "error": ""}
                        for message_id in resent
                    ],
                )
                events.extend(
                    event_row(message_id, now, Status.QUEUED, "resent by operator") for message_id in resent
                )
                events.extend(
                    event_row(r.message_id, now, Status.QUEUED, "resent by operator", r.destination)
                    for r in old
                )
                INSERT_EVENTS.run(connection, events)
        return ids

    def reprocess(self, message_ids: Sequence[int]) -> int:
        """Send messages through their channel again: back to RECEIVED, old deliveries kept; returns how many.

        Rejected messages, messages without a channel, messages already RECEIVED and pruned
        messages (their content is gone) are left alone. A still-QUEUED old delivery leaves its
        queue as ERROR ("superseded by reprocess").
        """
        if not message_ids:
            return 0
        now = self._clock()
        m, c = messages.c, deliveries.c
        # Not _status_update's shape: this claim's RETURNING says which messages it took, which a
        # Rows statement (no result) cannot.
        claim = (
            sa.update(messages)
            .where(
                m.id.in_(list(message_ids)),
                m.channel.is_not(None),
                m.status.not_in([Status.RECEIVED, Status.REJECTED]),
                m.pruned_at.is_(None),  # retention removed what a pass would process
            )
            .values(status=Status.RECEIVED, status_at=now, error="")
            .returning(m.id)
        )
        with store_errors("reprocessing messages"):
            # TRANSACTION: the messages back to RECEIVED, their deliveries superseded, and the events.
            with self._engine.begin() as connection:
                claimed = sorted(connection.execute(claim).scalars())
                if not claimed:
                    return 0
                events = [
                    event_row(message_id, now, Status.RECEIVED, "reprocess requested")
                    for message_id in claimed
                ]
                current = connection.execute(
                    sa.select(c.id, c.message_id, c.destination, c.status).where(
                        c.message_id.in_(claimed), c.superseded_at.is_(None)
                    )
                ).all()
                if current:
                    _supersede(connection, current, now, "superseded by reprocess", events)
                INSERT_EVENTS.run(connection, events)
        return len(claimed)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
