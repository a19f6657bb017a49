"""The rows a message's processing leaves besides the message: a deliveries row per destination, and events.

A channel's runner records them with a message's result (``QueueRepository.record_processing``);
a message processed at intake goes into the store with them (``MessageRepository``, through
``intake_rows``): both build them here, so both leave the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from engine.model import NewDelivery, NewMessage, utc_now
from engine.store.cipher import Cipher
from engine.store.driver import Children, Rows, binds, by_id, fit_row, fit_text
from engine.store.schema import deliveries, message_events, messages

# The lengths fit_text cuts these columns' values to.
_EVENT_STATUS, _EVENT_DETAIL, _EVENT_DESTINATION = (
    message_events.c[name].type.length for name in ("status", "detail", "destination")
)

INSERT_EVENTS = Rows(
    sa.insert(message_events).values(
        binds(message_events, "message_id", "at", "status", "detail", "destination")
    )
)


def status_update(*guard: sa.ColumnElement[bool], also: tuple[str, ...] = ()) -> Rows:
    """The one statement shape that writes messages' statuses: status, status_at and error by id.

    ``guard`` is what must hold for a row to change; ``also`` are further columns written with it.
    """
    return Rows(by_id(messages, *guard).values(binds(messages, "status", "status_at", "error", *also)))


def event_row(
    message_id: int, at: datetime, status: str, detail: str, destination: str | None = None
) -> dict:
    """A message_events row; ``destination`` None for a change of the message's own status."""
    fitted = None if destination is None else fit_text(destination, _EVENT_DESTINATION)
    return {
        "message_id": message_id,
        "at": at,
        "status": fit_text(status, _EVENT_STATUS),
        "detail": fit_text(detail, _EVENT_DETAIL),
        "destination": fitted,
    }


def processing_rows(
    message_id: int,
    channel: str,
    status: str,
    reason: str,
    new_deliveries: Sequence[NewDelivery],
    now: datetime,
    rows: list[dict],
    events: list[dict],
    cipher: Cipher,
) -> None:
    """Append what processing one message writes besides the message: its deliveries rows and events.

    A deliveries row per delivery, its payload sealed with ``cipher``; the events are the
    message's, then each delivery's. Shared by record_processing and the insert of messages
    processed at intake (intake_rows), so both leave the same rows.
    """
    events.append(event_row(message_id, now, status, reason))
    for delivery in new_deliveries:
        rows.append(
            delivery_row(
                message_id,
                channel,
                delivery.destination,
                delivery.status,
                delivery.control_id,
                cipher.seal(delivery.payload),
                delivery.reason,
                now,
            )
        )
        events.append(event_row(message_id, now, delivery.status, delivery.reason, delivery.destination))


def delivery_row(
    message_id: int,
    channel: str,
    destination: str,
    status: str,
    control_id: str,
    payload: bytes | None,
    reason: str,
    now: datetime,
) -> dict:
    """A new deliveries row (no attempt yet), its text fitted; ``payload`` as stored (sealed or clear)."""
    return fit_row(
        deliveries,
        {
            "message_id": message_id,
            "channel": channel,
            "destination": destination,
            "status": status,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now,
            "sent_at": None,
            "superseded_at": None,
            "control_id": control_id,
            "payload": payload,
            "response": None,
            "response_code": "",
            "reason": reason,
        },
    )


def intake_rows(
    new_messages: Sequence[NewMessage], message_ids: Iterable[int], now: datetime, cipher: Cipher
) -> tuple[list[dict], list[dict]]:
    """The deliveries and events rows of the messages processed at intake, as record_processing writes.

    A message's validation findings come first among its events, one each, at its stored status.
    """
    rows: list[dict] = []
    events: list[dict] = []
    for message, message_id in zip(new_messages, message_ids):
        events.extend(event_row(message_id, now, message.status, finding) for finding in message.findings)
        if message.deliveries is not None:
            processing_rows(
                message_id,
                message.channel,
                message.status,
                message.error,
                message.deliveries,
                now,
                rows,
                events,
                cipher,
            )
    return rows, events


# The deliveries of messages processed at intake: their ids are not needed (nothing waits on them).
_DELIVERY_COLUMNS = tuple(delivery_row(0, "", "", "", "", None, "", utc_now()))
_INSERT_DELIVERIES = Rows(sa.insert(deliveries).values(binds(deliveries, *_DELIVERY_COLUMNS)))
# intake_rows' rows as the intake's insert of one statement takes them (PostgreSQL), each naming
# its message by position.
INTAKE_CHILDREN = (
    Children("d", deliveries, "message_id", tuple(n for n in _DELIVERY_COLUMNS if n != "message_id")),
    Children("e", message_events, "message_id", ("at", "status", "detail", "destination")),
)


def insert_intake_rows(connection: sa.Connection, rows: list[dict], events: list[dict]) -> None:
    """Insert intake_rows' deliveries and events inside the connection's transaction."""
    if rows:
        _INSERT_DELIVERIES.run(connection, rows)
    INSERT_EVENTS.run(connection, events)
