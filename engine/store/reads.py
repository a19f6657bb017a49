"""What the store's reads return, as plain frozen dataclasses: importable without SQLAlchemy.

Both ways of reading a store fill them: the repositories (``MessageRepository``, ``ClusterRepository``,
SQLAlchemy on any database) and ``engine.store.driver.sqlite_reads`` (the stdlib's sqlite3, which
read-only commands use on a SQLite store, so that they start without importing SQLAlchemy). A
column is read into the field of the same name; a ``datetime`` field is an aware UTC time.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.errors import StoreError
from engine.hl7.terms import query_terms
from engine.model import Status, require_aware

__all__ = [
    "INDEXED_STATUSES",
    "NODES_SHOWN",
    "SETTLED",
    "STATUS_INDEX_WHERE",
    "WHOLE_CHANNEL",
    "WORKLIST_SHOWN",
    "dashboard_counts",
    "DashboardCounts",
    "Pause",
    "PatientSearch",
    "QueueState",
    "is_paused",
    "ClusterView",
    "ContentSearchOff",
    "DeliverySummary",
    "HeldLease",
    "LeaseRow",
    "MessageEvent",
    "MessageQuery",
    "MessageSummary",
    "NodeState",
    "NodeView",
    "StoredMessage",
    "held_lease",
    "lease_expired",
    "lease_row",
    "node_view",
    "status_index_term",
]


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """Search criteria (each one given must match exactly) and a page: newest first, below ``before_id``."""

    control_id: str | None = None
    patient_id: str | None = None  # PID-3.1 of the message's first patient identifier
    message_type: str | None = None  # "ADT", "ADT^A01" or "ADT^A01^ADT_A01"; an empty component matches any
    sending_application: str | None = None
    sending_facility: str | None = None
    status: str | None = None
    channel: str | None = None
    listener: str | None = None
    since: datetime | None = None  # received_at >= since
    until: datetime | None = None  # received_at < until
    # Words of the content (engine.hl7.terms: names, identifiers, OBX values), each matching a word's start.
    text: str | None = None
    limit: int = 100
    before_id: int | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        if self.text is not None and not query_terms(self.text):
            raise ValueError(f"a content search needs a letter or digit (got {self.text!r})")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                require_aware(moment, name)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A stored message without its content: what a list of messages shows."""

    id: int
    received_at: datetime
    listener: str
    channel: str | None
    peer: str
    status: str
    sending_application: str
    sending_facility: str
    message_code: str
    trigger_event: str
    control_id: str
    version: str
    ack_code: str
    error: str
    patient_id: str

    @property
    def message_type(self) -> str:
        """MSH-9 as operators write it: ``ADT^A01`` (``ADT`` when there is no trigger event)."""
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    def to_json_dict(self) -> dict:
        """The summary as JSON-ready values: ``type`` is message_type, ``received_at`` ISO 8601."""
        return {
            "id": self.id,
            "channel": self.channel,
            "control_id": self.control_id,
            "type": self.message_type,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "listener": self.listener,
            "peer": self.peer,
            "sending_application": self.sending_application,
            "sending_facility": self.sending_facility,
            "message_code": self.message_code,
            "trigger_event": self.trigger_event,
            "version": self.version,
            "ack_code": self.ack_code,
            "error": self.error,
            "patient_id": self.patient_id,
        }


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    """One delivery row of a stored message, for showing its history."""

    id: int
    destination: str
    status: str
    attempts: int
    sent_at: datetime | None
    response_code: str
    reason: str
    payload: bytes | None  # the encoded content (what is or was sent)
    response: bytes | None
    created_at: datetime
    next_attempt_at: datetime
    superseded_at: datetime | None  # set when a resend or reprocess replaced this row


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One later status change of a stored message, or of its delivery to ``destination``."""

    id: int
    at: datetime
    status: str
    detail: str
    destination: str | None = None  # None: the message's own status


@dataclass(frozen=True, slots=True)
class StoredMessage(MessageSummary):
    """A stored message with its content at every stage, our ACK, its deliveries and its status history."""

    raw: bytes
    ack: bytes | None
    transformed: bytes | None  # after the channel's transforms; None before processing or without transforms
    receiving_application: str
    receiving_facility: str
    message_structure: str
    processing_id: str
    charset: str
    batch_control_id: str | None
    batch_index: int | None
    deliveries: tuple[DeliverySummary, ...]  # oldest first, superseded ones included
    events: tuple[MessageEvent, ...]
    # When retention removed the content: raw is then empty, transformed and the deliveries'
    # payloads and responses None (engine.store.retention).
    pruned_at: datetime | None = None

    @property
    def summary(self) -> MessageSummary:
        """Just the summary part, e.g. to print it like a search result."""
        return MessageSummary(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MessageSummary)})


class ContentSearchOff(StoreError):
    """A search by content where there is no index to search: the content is encrypted at rest."""

    def __init__(self) -> None:
        super().__init__(
            "search by content is off: with content encrypted at rest the store keeps no index of it"
        )


#: The statuses of a delivery the dashboard counts as settled in its window.
SETTLED = (Status.SENT, Status.ERROR, Status.FILTERED)

#: The statuses the messages' status index holds (0024, engine.store.schema): all but the two
#: successful ends, TRANSFORMED and SENT, which are most of the store and which every insert of a
#: message processed at intake without destinations, and every delivery's success, wrote to it. A
#: search for one of them alone reads back from the newest message; a channel's seeks its own index.
INDEXED_STATUSES = (Status.RECEIVED, Status.QUEUED, Status.ERROR, Status.REJECTED, Status.FILTERED)
# The index's own condition. SQLite uses a partial index only for a query whose WHERE holds this term
# itself (status_index_term), not one it implies, such as status = 'ERROR'.
STATUS_INDEX_WHERE = "status IN (" + ", ".join(f"'{status}'" for status in INDEXED_STATUSES) + ")"


def status_index_term(status: str | None) -> str | None:
    """The status index's condition on messages, for a query on ``status`` that the index holds; else None."""
    return f"messages.{STATUS_INDEX_WHERE}" if status in INDEXED_STATUSES else None


#: The destination name of a pause of a whole channel.
WHOLE_CHANNEL = ""


@dataclass(frozen=True, slots=True)
class Pause:
    """A paused queue (or channel, with ``destination`` WHOLE_CHANNEL) and why."""

    channel: str
    destination: str
    paused_at: datetime
    paused_by: str
    reason: str
    halted_delivery: int | None

    def to_json_dict(self) -> dict:
        """The pause as the API shows it."""
        return {
            "paused_at": self.paused_at.isoformat(),
            "paused_by": self.paused_by,
            "reason": self.reason,
            "halted_delivery": self.halted_delivery,
        }


def is_paused(pauses: Mapping[tuple[str, str], Pause], channel: str, destination: str) -> Pause | None:
    """The pause that holds this queue: its own, else its channel's; None when it may send."""
    return pauses.get((channel, destination)) or pauses.get((channel, WHOLE_CHANNEL))


@dataclass(frozen=True, slots=True)
class QueueState:
    """One destination's queue now, and what it settled in the window."""

    depth: int = 0
    oldest_queued_at: datetime | None = None
    head_attempts: int = 0  # attempts the head of the queue failed so far: consecutive failures
    head_reason: str = ""
    last_error: str = ""
    last_error_at: datetime | None = None
    settled: dict[str, int] = field(default_factory=dict)  # status -> deliveries in the window


@dataclass(frozen=True, slots=True)
class DashboardCounts:
    """The window's counts: by listener, by channel (status -> messages) and by queue."""

    since: datetime
    at: datetime
    listeners: dict[str, int]
    last_received: dict[str, datetime]
    channels: dict[str, dict[str, int]]
    channels_queued: dict[str, int]  # messages of the channel QUEUED now, whenever received
    queues: dict[tuple[str, str], QueueState]


def dashboard_counts(
    since: datetime,
    clock: Callable[[], datetime],
    received: Iterable[tuple],
    settled: Iterable[tuple],
    channels_queued: dict[str, int],
    queues: Iterable[tuple[str, str]],
    queue_state: Callable[[str, str, dict[str, int]], QueueState],
) -> DashboardCounts:
    """A window's DashboardCounts from its grouped rows, as both ways of reading the store fold them.

    ``received``: (listener, channel, status, messages, latest received_at) rows; ``settled``:
    (channel, destination, status, deliveries) rows; ``queue_state(channel, destination, settled)``
    reads one queue now, for each of ``queues`` and each queue that settled something; ``clock``
    says when, after all of them.
    """
    listeners: collections.Counter[str] = collections.Counter()
    last_received: dict[str, datetime] = {}
    channels: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for listener, channel, status, count, latest in received:
        listeners[listener] += count
        if listener not in last_received or latest > last_received[listener]:
            last_received[listener] = latest
        if channel is not None:
            channels[channel][status] += count
    by_queue: dict[tuple[str, str], dict[str, int]] = collections.defaultdict(dict)
    for channel, destination, status, count in settled:
        by_queue[(channel, destination)][status] = count
    states = {
        key: queue_state(*key, by_queue.get(key, {})) for key in dict.fromkeys(list(queues) + list(by_queue))
    }
    return DashboardCounts(
        since=since,
        at=clock(),
        listeners=dict(listeners),
        last_received=last_received,
        channels={name: dict(counts) for name, counts in channels.items()},
        channels_queued=channels_queued,
        queues=states,
    )


#: A node that stopped or died is still shown for this long after its last sign of life.
NODES_SHOWN = timedelta(hours=24)

#: The record's worklist shows at most this many open conflicts, the oldest.
WORKLIST_SHOWN = 500


@dataclass(frozen=True, slots=True)
class PatientSearch:
    """Which of the record's patients (not merged away) to find, each criterion given matching; lowest ids.

    ``engine.record.view.patient_search`` makes it; both readers of the record turn it into SQL.
    ``name_pattern`` is a LIKE pattern (escaped with a backslash) on the names' family and given keys;
    ``name_blind`` a key that must equal one of them whole (the keyed hash of the name with encryption).
    """

    identifier: str | None = None
    authority: str | None = None
    name_pattern: str | None = None
    name_blind: str | None = None
    birth_date: str | None = None
    limit: int = 100


class NodeState(enum.StrEnum):
    """What a node is now, as its row tells."""

    ALIVE = "alive"
    STOPPED = "stopped"
    DEAD = "dead"  # its heartbeat is older than a lease and it never said it stopped


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a node holds (or held: ``expired`` once it was not renewed in time)."""

    key: str
    token: int
    acquired_at: datetime | None
    expires_at: datetime | None
    expired: bool

    def to_json_dict(self) -> dict:
        """The lease as JSON-ready values (times in ISO 8601)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class NodeView:
    """One engine process as the store knows it, with the leases its row holds."""

    id: int
    name: str
    host: str
    pid: int
    roles: tuple[str, ...]
    wake_address: str | None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    state: NodeState
    heartbeat_age: float  # seconds since its last heartbeat, to the millisecond
    leases: tuple[HeldLease, ...]

    def to_json_dict(self) -> dict:
        """The node as JSON-ready values (times in ISO 8601, the age in seconds)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A row of the leases table: the work, who holds it (None when free) and until when."""

    key: str
    holder: int | None
    holder_name: str | None
    token: int
    acquired_at: datetime | None
    expires_at: datetime | None
    expired: bool

    @property
    def held(self) -> bool:
        """Whether a process holds the work now (a holder whose lease has not expired)."""
        return self.holder is not None and not self.expired

    def to_json_dict(self) -> dict:
        """The row as JSON-ready values (times in ISO 8601), and whether it is ``held``."""
        return {**_jsonable(self), "held": self.held}


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The nodes and every lease row, read together at one moment."""

    at: datetime
    lease_seconds: float
    nodes: tuple[NodeView, ...]
    leases: tuple[LeaseRow, ...]

    @property
    def unheld(self) -> tuple[str, ...]:
        """The keys of work that no process holds now (free, or its holder's lease expired)."""
        return tuple(lease.key for lease in self.leases if not lease.held)

    def to_json_dict(self) -> dict:
        """The view as JSON-ready values."""
        return {
            "at": self.at.isoformat(),
            "lease_seconds": self.lease_seconds,
            "nodes": [node.to_json_dict() for node in self.nodes],
            "unheld": list(self.unheld),
        }


def node_view(row: Mapping, leases: Sequence[HeldLease], now: datetime, lease_seconds: float) -> NodeView:
    """A ``nodes`` row (by column name) as the node it tells of at ``now``, with the leases it holds."""
    return NodeView(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        pid=row["pid"],
        roles=tuple(role for role in row["roles"].split(",") if role),
        wake_address=row["wake_address"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        stopped_at=row["stopped_at"],
        state=_node_state(row["stopped_at"], row["heartbeat_at"], now, timedelta(seconds=lease_seconds)),
        heartbeat_age=round(max(0.0, (now - row["heartbeat_at"]).total_seconds()), 3),
        leases=tuple(leases),
    )


def held_lease(row: Mapping, now: datetime) -> HeldLease:
    """A ``leases`` row (key, token, acquired_at, expires_at) as a lease its holder has at ``now``."""
    return HeldLease(
        row["key"], row["token"], row["acquired_at"], row["expires_at"], lease_expired(row["expires_at"], now)
    )


def lease_row(row: Mapping, now: datetime) -> LeaseRow:
    """A ``leases`` row with its holder's node ``name`` (None when free or gone) as it stands at ``now``."""
    return LeaseRow(
        key=row["key"],
        holder=row["holder"],
        holder_name=row["name"],
        token=row["token"],
        acquired_at=row["acquired_at"],
        expires_at=row["expires_at"],
        expired=lease_expired(row["expires_at"], now),
    )


def _node_state(
    stopped_at: datetime | None, heartbeat_at: datetime, now: datetime, stale: timedelta
) -> NodeState:
    if stopped_at is not None:
        return NodeState.STOPPED
    return NodeState.DEAD if now - heartbeat_at > stale else NodeState.ALIVE


def lease_expired(expires_at: datetime | None, now: datetime) -> bool:
    # As a claim sees it: a lease may be taken over once its expiry is past, not at the instant.
    return expires_at is None or expires_at < now


def _jsonable(value):
    """A dataclass of this module as JSON-ready values: times in ISO 8601, tuples as lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value):
        return {field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return value
