"""What operators and alert rules keep in the store: paused queues and each alert rule's state.

A pause names a channel (every destination of it) or one destination of a channel. It only holds
the destination's dispatcher back: messages are still received, processed and queued, so nothing
is lost and the queue grows. Every engine process reads the pauses (``PauseWatch`` in
engine.channels.pausing), so a pause written by the CLI or another node stops the queue's holder.

An ``on_error: halt`` queue pauses itself at its first ERROR (``halt``), naming the delivery it
stopped at; ``resume`` puts that delivery back in its queue in place (its id keeps it at the head)
in the same transaction that removes the pause, so it is retried before anything queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.model import Status, utc_now
from engine.store.driver import fit_text, store_errors
from engine.store.processing import INSERT_EVENTS, event_row
from engine.store.reads import Pause
from engine.store.schema import alert_states, deliveries, messages, pauses

__all__ = ["AlertState", "ControlRepository"]

_REASON = 1000  # characters of a pause's reason kept
_BY = pauses.c.paused_by.type.length


@dataclass(frozen=True, slots=True)
class AlertState:
    """An alert rule's state: firing or not, since when, and what it last said."""

    rule: str
    firing: bool
    detail: str
    fired_at: datetime | None
    cleared_at: datetime | None


def _insert_new(engine: sa.Engine, table: sa.Table):
    """An INSERT that leaves an existing row (same primary key) alone; it returns the key of a row it added.

    RETURNING, not rowcount: the store's PostgreSQL driver reports no rowcount for it.
    """
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)


class ControlRepository:
    """Blocking reads and writes of pauses and alert states, as plain data; never on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def pauses(self) -> list[Pause]:
        """Every pause, by channel then destination (a whole channel's first)."""
        p = pauses.c
        statement = sa.select(
            p.channel, p.destination, p.paused_at, p.paused_by, p.reason, p.halted_delivery
        ).order_by(p.channel, p.destination)
        with store_errors("reading paused queues"), self._engine.connect() as connection:
            return [Pause(*row) for row in connection.execute(statement)]

    def pause(self, channel: str, destination: str, *, by: str, reason: str = "") -> bool:
        """Pause the queue (WHOLE_CHANNEL: every queue of the channel); False when it was paused already."""
        return self._insert(channel, destination, by=by, reason=reason, halted_delivery=None)

    def halt(self, channel: str, destination: str, delivery_id: int, reason: str) -> bool:
        """An ``on_error: halt`` queue stopped at ``delivery_id``; False when it was paused already."""
        return self._insert(
            channel, destination, by="on_error: halt", reason=reason, halted_delivery=delivery_id
        )

    def _insert(self, channel: str, destination: str, *, by: str, reason: str, halted_delivery) -> bool:
        row = {
            "channel": channel,
            "destination": destination,
            "paused_at": self._clock(),
            "paused_by": fit_text(by, _BY),
            "reason": fit_text(reason, _REASON),
            "halted_delivery": halted_delivery,
        }
        with store_errors("pausing a queue"), self._engine.begin() as connection:
            return connection.execute(_insert_new(self._engine, pauses), row).first() is not None

    def resume(self, channel: str, destination: str) -> Pause | None:
        """Remove the pause and put its halted delivery (if any) back at the head; the pause, or None."""
        p = pauses.c
        where = (p.channel == channel, p.destination == destination)
        now = self._clock()
        with store_errors("resuming a queue"):
            # TRANSACTION: the pause gone and its halted delivery queued again, together: a resumed
            # halt queue never sends what stood behind the delivery it stopped at first.
            with self._engine.begin() as connection:
                row = connection.execute(
                    sa.select(
                        p.channel, p.destination, p.paused_at, p.paused_by, p.reason, p.halted_delivery
                    ).where(*where)
                ).first()
                if row is None:
                    return None
                connection.execute(sa.delete(pauses).where(*where))
                pause = Pause(*row)
                if pause.halted_delivery is not None:
                    _requeue_in_place(connection, pause.halted_delivery, now)
                return pause

    def alert_states(self) -> dict[str, AlertState]:
        """Every alert rule's stored state, by rule name."""
        a = alert_states.c
        statement = sa.select(a.rule, a.firing, a.detail, a.fired_at, a.cleared_at)
        with store_errors("reading alert states"), self._engine.connect() as connection:
            return {row.rule: AlertState(*row) for row in connection.execute(statement)}

    def set_alert_state(self, state: AlertState) -> None:
        """Store a rule's state (replacing the one before)."""
        values = {
            "rule": state.rule,
            "firing": state.firing,
            "detail": fit_text(state.detail, _REASON),
            "fired_at": state.fired_at,
            "cleared_at": state.cleared_at,
        }
        with store_errors("recording an alert state"):
            # TRANSACTION: the rule's one row replaced.
            with self._engine.begin() as connection:
                connection.execute(sa.delete(alert_states).where(alert_states.c.rule == state.rule))
                connection.execute(sa.insert(alert_states), values)


def _requeue_in_place(connection: sa.Connection, delivery_id: int, now: datetime) -> None:
    """The halted delivery QUEUED again, due now, its message QUEUED, with events saying why.

    Left alone when it is no longer the current ERROR row (an operator resent or reprocessed it).
    """
    c = deliveries.c
    taken = connection.execute(
        sa.update(deliveries)
        .where(c.id == delivery_id, c.status == Status.ERROR, c.superseded_at.is_(None))
        .values(status=Status.QUEUED, next_attempt_at=now, updated_at=now)
        .returning(c.message_id, c.destination)
    ).first()
    if taken is None:
        return
    message_id, destination = taken
    connection.execute(
        sa.update(messages)
        .where(messages.c.id == message_id)
        .values(status=Status.QUEUED, status_at=now, error="")
    )
    detail = "queue resumed by operator: the delivery it halted at is retried first"
    INSERT_EVENTS.run(
        connection,
        [
            event_row(message_id, now, Status.QUEUED, detail),
            event_row(message_id, now, Status.QUEUED, detail, destination),
        ],
    )
