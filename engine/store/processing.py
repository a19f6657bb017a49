"""The rows a message's processing leaves besides the message: a deliveries row per destination, and events.

A channel's runner records them with a message's result (``QueueRepository.record_processing``);
a message processed at intake goes into the store with them (``MessageRepository``, through
``intake_rows``): both build them here, so both leave the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
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

# The columns of a deliveries row processing_rows fills per message; the others are per channel.
_VARYING = ("message_id", "created_at", "updated_at", "next_attempt_at", "control_id", "payload")
_CONTROL_ID = deliveries.c.control_id.type.length
# The constant columns of so many destinations (and events) are kept fitted (a reason may vary).
_CONSTANTS_KEPT = 1024

# The order of an event's tuple (processing_rows), and of INSERT_EVENTS' values.
EVENT_COLUMNS = ("message_id", "at", "status", "detail", "destination")
INSERT_EVENTS = Rows(sa.insert(message_events).values(binds(message_events, *EVENT_COLUMNS)))


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
    rows: list[tuple],
    events: list[tuple],
    cipher: Cipher,
) -> None:
    """Append what processing one message writes besides the message: its deliveries rows and events.

    As tuples in DELIVERY_COLUMNS' and EVENT_COLUMNS' order: a deliveries row per delivery, its
    payload sealed with ``cipher``; the events are the message's, then each delivery's. Shared by
    record_processing and the insert of messages processed at intake (intake_rows), so both leave
    the same rows. The columns that are the same for every message of a channel (its destinations,
    their statuses and reasons) are fitted once (_delivery_constants, _event_constants).
    """
    events.append((message_id, now) + _event_constants(status, reason, None))
    for delivery in new_deliveries:
        control_id = delivery.control_id
        if isinstance(control_id, str):  # as fit_row: anything else goes as given (None is refused)
            control_id = fit_text(control_id, _CONTROL_ID)
        rows.append(
            (message_id, now, now, now, control_id, cipher.seal(delivery.payload))
            + _delivery_constants(channel, delivery.destination, delivery.status, delivery.reason)
        )
        events.append(
            (message_id, now) + _event_constants(delivery.status, delivery.reason, delivery.destination)
        )


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
    new_messages: Sequence[NewMessage], now: datetime, cipher: Cipher
) -> tuple[list[tuple], list[tuple]]:
    """The deliveries and events rows of the messages processed at intake, as record_processing writes.

    Each row names its message by position among ``new_messages`` (1, 2, ...), which the intake's
    insert turns into its id (INTAKE_CHILDREN). A message's validation findings come first among
    its events, one each, at its stored status.
    """
    rows: list[tuple] = []
    events: list[tuple] = []
    for position, message in enumerate(new_messages, start=1):
        if message.findings:
            events += [(position, now) + _event_constants(message.status, f, None) for f in message.findings]
        if message.deliveries is not None:
            processing_rows(
                position,
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


# The order of processing_rows' tuples: the columns that vary by message first, then those
# _delivery_constants and _event_constants give.
DELIVERY_COLUMNS = _VARYING + tuple(
    name for name in delivery_row(0, "", "", "", "", None, "", utc_now()) if name not in _VARYING
)
# intake_rows' rows as the intake's insert takes them, each naming its message by position.
INTAKE_CHILDREN = (
    Children("d", deliveries, "message_id", DELIVERY_COLUMNS[1:]),
    Children("e", message_events, "message_id", EVENT_COLUMNS[1:]),
)


@functools.lru_cache(maxsize=_CONSTANTS_KEPT)
def _delivery_constants(channel: str, destination: str, status: str, reason: str) -> tuple:
    """A new deliveries row's columns after its varying ones (DELIVERY_COLUMNS), fitted as by delivery_row."""
    row = delivery_row(0, channel, destination, status, "", None, reason, utc_now())
    return tuple(row[name] for name in DELIVERY_COLUMNS[len(_VARYING) :])


@functools.lru_cache(maxsize=_CONSTANTS_KEPT)
def _event_constants(status: str, detail: str, destination: str | None) -> tuple:
    """An event's status, detail and destination, fitted as event_row does."""
    row = event_row(0, utc_now(), status, detail, destination)
    return tuple(row[name] for name in EVENT_COLUMNS[2:])
