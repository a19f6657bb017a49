"""The engine's domain model: what a message is at each step of its life, as plain values.

Every layer speaks these types (the HL7 format, the store, the channels, the sockets) and none
of them depends on another layer to get them: the store records a ``ProcessingResult`` without
knowing the pipeline that made it, a listener hands a ``SourceFile`` up without knowing the store.

The life of a message, in these terms: the intake stores a ``NewMessage`` (RECEIVED, or REJECTED
with its answer); the channel turns a ``ReceivedMessage`` into a ``ProcessingResult`` with one
``NewDelivery`` per destination; a dispatcher takes ``Delivery`` values from a queue, a destination
answers each with a ``DeliveryResult``, and the dispatcher records its decision as an
``AttemptResult``. ``roll_up`` is the one rule that turns deliveries' statuses into a message's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

#: The longest channel or destination name the store keeps (a queue's key: never cut to fit).
NAME_LENGTH = 100


class Status(enum.StrEnum):
    """Where a message, or its delivery to one destination, stands; the value is what the store holds."""

    RECEIVED = "RECEIVED"
    REJECTED = "REJECTED"
    FILTERED = "FILTERED"
    TRANSFORMED = "TRANSFORMED"
    QUEUED = "QUEUED"
    SENT = "SENT"
    ERROR = "ERROR"


class Outcome(enum.StrEnum):
    """What became of a delivery attempt."""

    SENT = "SENT"  # the destination took responsibility (AA/CA, file written, HTTP 2xx with AA)
    RETRY = "RETRY"  # try again later (timeout, connection refused, CE, AR 206/207 or without ERR)
    ERROR = "ERROR"  # resending unchanged would fail again (AE, CR, AR 200-203, HTTP 4xx)


def roll_up(statuses: Iterable[str]) -> Status:
    """A message's status from the statuses of its current deliveries: the one rule the engine uses.

    No deliveries: TRANSFORMED (its channel has no destinations). Any still QUEUED: QUEUED. Else
    ERROR when any failed, SENT when any went out, FILTERED when every destination declined it.
    """
    seen = set(statuses)
    if not seen:
        return Status.TRANSFORMED
    for status in (Status.QUEUED, Status.ERROR, Status.SENT):
        if status in seen:
            return status
    return Status.FILTERED


def utc_now() -> datetime:
    """The current time, aware, in UTC: the engine's default clock."""
    return datetime.now(UTC)


def require_aware(moment: datetime, name: str) -> None:
    """Raise ValueError unless ``moment`` carries a UTC offset (naive times are ambiguous)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


@dataclass(slots=True)
class NewMessage:
    """One message to store, as the intake saw it; field names are the ``messages`` columns.

    Read-only by convention (``dataclasses.replace`` makes a changed copy): not frozen, because
    a frozen dataclass's __init__ costs three times as much, on every message received.
    """

    raw: bytes
    received_at: datetime  # aware; stored in UTC
    listener: str
    peer: str
    status: str  # Status.RECEIVED or Status.REJECTED at intake
    channel: str | None = None
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""
    trigger_event: str = ""
    message_structure: str = ""
    control_id: str = ""
    version: str = ""
    processing_id: str = ""
    charset: str = ""
    ack_code: str = ""  # the code we answered (AA, AE, AR, CA, CE, CR), '' for no answer
    ack: bytes | None = None  # the ACK bytes we answered with
    error: str = ""  # why it was rejected
    batch_control_id: str | None = None
    batch_index: int | None = None
    patient_id: str = ""  # PID-3.1 of the first identifier, unescaped (engine.hl7.header.patient_id)
    transformed: bytes | None = None  # processed at intake: the content after the channel's transforms
    # Processed at intake (the channel processed it before it was stored): one delivery per
    # destination, stored with the message in its transaction, with the events a processing pass
    # writes. None: not processed (RECEIVED for its channel, REJECTED, or final as stored). Not a column.
    deliveries: tuple[NewDelivery, ...] | None = None
    # What validating it against its structure found (engine.hl7.validate), one line each, kept as
    # its events (written with it). They name rules and locations, never values. Not a column.
    findings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file a file source read; recorded with the messages it held, in the same transaction."""

    path: str
    sha256: str  # hex digest of the file's bytes
    size: int  # bytes
    modified_ns: int  # its modification time as read (st_mtime_ns): with path and size, which file it was


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A stored message waiting for its channel to process it."""

    id: int
    channel: str
    raw: bytes
    charset: str  # MSH-18 as received, '' when absent
    control_id: str
    received_at: datetime
    sending_application: str
    sending_facility: str
    message_code: str
    trigger_event: str


_DELIVERY_STATUSES = frozenset({Status.QUEUED, Status.FILTERED, Status.ERROR})
_RESULT_STATUSES = frozenset({Status.FILTERED, Status.ERROR, Status.QUEUED, Status.TRANSFORMED})


@dataclass(slots=True)
class NewDelivery:
    """What a channel made of a message for one destination: QUEUED with its bytes, FILTERED or ERROR.

    Read-only by convention, like ``NewMessage``: a message processed at intake makes one for each
    destination, and a frozen dataclass's __init__ costs twice as much.
    """

    destination: str
    status: str  # Status.QUEUED, FILTERED or ERROR
    control_id: str  # MSH-10 of the payload
    payload: bytes | None  # the encoded message, exactly the bytes to send; required when QUEUED
    reason: str = ""  # why it was filtered or failed

    def __post_init__(self) -> None:
        if self.status not in _DELIVERY_STATUSES:
            raise ValueError(f"a delivery is QUEUED, FILTERED or ERROR, not {self.status!r}")
        if self.status == Status.QUEUED and self.payload is None:
            raise ValueError(f"a QUEUED delivery to {self.destination!r} needs a payload")
        # A name is a key of its queue: cutting it to fit, as text copies are, would lose the queue.
        if not 0 < len(self.destination) <= NAME_LENGTH:
            raise ValueError(
                f"a destination name has 1 to {NAME_LENGTH} characters, not {len(self.destination)}"
            )


@dataclass(slots=True)
class ProcessingResult:
    """What a channel made of one RECEIVED message: its new status and one delivery per destination.

    Read-only by convention (not frozen, for the same reason as ``NewDelivery``).
    """

    message_id: int
    status: str  # FILTERED, ERROR, QUEUED (some delivery is QUEUED) or TRANSFORMED (no destinations)
    reason: str = ""
    transformed: bytes | None = None  # the content after the channel's transforms, None when it has none
    deliveries: tuple[NewDelivery, ...] = ()

    def __post_init__(self) -> None:
        self.deliveries = tuple(self.deliveries)
        if self.status not in _RESULT_STATUSES:
            raise ValueError(
                f"a processing result is FILTERED, ERROR, QUEUED or TRANSFORMED, not {self.status!r}"
            )
        # The message status must agree with the roll-up of its deliveries.
        if (self.status == Status.QUEUED) != any(d.status == Status.QUEUED for d in self.deliveries):
            raise ValueError(
                f"message {self.message_id}: a result is QUEUED exactly when one of its deliveries is"
            )
        if self.status == Status.TRANSFORMED and self.deliveries:
            raise ValueError(f"message {self.message_id}: TRANSFORMED is for a channel without destinations")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to hand one message to one destination."""

    delivery_id: int
    message_id: int
    channel: str
    destination: str
    control_id: str  # MSH-10 of the payload, for matching the downstream ACK's MSA-2
    payload: bytes  # the encoded message, exactly the bytes to send
    attempt: int  # 1 for the first attempt
    queued_at: datetime | None = None  # when the delivery was queued (for giving up by age)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The result of one attempt: the outcome, what the destination answered, and why."""

    outcome: Outcome
    response: bytes | None = None  # e.g. the downstream ACK
    response_code: str = ""  # e.g. MSA-1 (AA/AE/AR/CA/CE/CR) or the HTTP status
    reason: str = ""  # readable, for the operator; never message content


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What the dispatcher decided of one attempt: SENT, RETRY at ``next_attempt_at``, or ERROR (gave up)."""

    delivery_id: int
    outcome: Outcome
    at: datetime  # aware
    response: bytes | None = None
    response_code: str = ""
    reason: str = ""
    next_attempt_at: datetime | None = None  # required for RETRY
    # A replay (from a dispatcher's journal after a crash) names the attempt it records: it counts
    # only if the delivery has made one attempt fewer, so what the store already has is not repeated.
    attempt: int | None = None
    # RETRY only: the attempt may have reached the destination, but its answer never came back (the
    # engine stopped while it was in flight): the next attempt is a possible duplicate.
    in_doubt: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        if self.in_doubt and self.outcome != Outcome.RETRY:
            raise ValueError(f"delivery {self.delivery_id}: only a RETRY is in doubt")
        require_aware(self.at, "at")
        if self.outcome == Outcome.RETRY:
            if self.next_attempt_at is None:
                raise ValueError(f"delivery {self.delivery_id}: a RETRY needs next_attempt_at")
            require_aware(self.next_attempt_at, "next_attempt_at")


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """The proof that this process holds a piece of work: a write made under it checks it.

    ``key`` names the work (``channel:adt``, ``queue:adt/emr``, ``job:retention``), ``holder`` the
    process (its ``nodes`` row), ``token`` the holding (it grows at every new holder). A write
    that passes a LeaseToken happens only while the lease row still says so, and extends it.
    """

    key: str
    holder: int
    token: int
