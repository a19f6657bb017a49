"""What the store says of the engine processes that share it: the nodes, their heartbeats, their leases.

The rows are written by the processes themselves (their ``StoreLeases``): a ``nodes`` row per
process start, its heartbeat renewed, and a ``leases`` row per piece of work to hold. This module only
reads them, for people (the console, ``hl7engine nodes``), and forgets nodes long gone.

A node is ``alive`` while its heartbeat is at most ``lease_seconds`` old, ``stopped`` once it said
so on a clean stop, and ``dead`` when its heartbeat went stale without a stop (killed, hung, cut
off): the leases it held expire and other processes take its work over.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.model import require_aware, utc_now
from engine.store.driver import store_errors
from engine.store.schema import leases, nodes

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "NODES_KEPT",
    "NODES_SHOWN",
    "ClusterRepository",
    "ClusterView",
    "HeldLease",
    "LeaseRow",
    "NodeState",
    "NodeView",
]

#: How long a lease lives without renewal when the config does not say (``engine.cluster.lease_seconds``).
DEFAULT_LEASE_SECONDS = 10.0
#: A node that stopped or died is still shown for this long after its last sign of life.
NODES_SHOWN = timedelta(hours=24)
#: A node's row is kept for this long after its last sign of life, then pruned.
NODES_KEPT = timedelta(days=7)


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


class ClusterRepository:
    """Blocking reads of the nodes and leases tables, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def nodes(
        self,
        now: datetime | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        *,
        shown: timedelta = NODES_SHOWN,
    ) -> list[NodeView]:
        """Every node alive at ``now``, and those stopped or dead within ``shown``, by name then start.

        Each comes with the leases its row holds, expired ones included (a dead node's, until taken).
        """
        now = self._now(now)
        since = now - shown
        n = nodes.c
        listed = (
            sa.select(nodes)
            .where(sa.or_(n.heartbeat_at >= since, n.stopped_at >= since))
            .order_by(n.name, n.started_at, n.id)
        )
        with store_errors("reading the nodes"), self._engine.connect() as connection:
            rows = connection.execute(listed).all()
            held = _held_by(connection, [row.id for row in rows], now)
        stale = timedelta(seconds=lease_seconds)
        return [
            NodeView(
                id=row.id,
                name=row.name,
                host=row.host,
                pid=row.pid,
                roles=tuple(role for role in row.roles.split(",") if role),
                wake_address=row.wake_address,
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                stopped_at=row.stopped_at,
                state=_state(row.stopped_at, row.heartbeat_at, now, stale),
                heartbeat_age=round(max(0.0, (now - row.heartbeat_at).total_seconds()), 3),
                leases=tuple(held.get(row.id, ())),
            )
            for row in rows
        ]

    def leases(self, now: datetime | None = None) -> list[LeaseRow]:
        """Every lease row, by key, with its holder's node name (None when free or the node is gone)."""
        now = self._now(now)
        c = leases.c
        statement = (
            sa.select(c.key, c.holder, nodes.c.name, c.token, c.acquired_at, c.expires_at)
            .select_from(leases.outerjoin(nodes, nodes.c.id == c.holder))
            .order_by(c.key)
        )
        with store_errors("reading the leases"), self._engine.connect() as connection:
            return [
                LeaseRow(
                    key=row.key,
                    holder=row.holder,
                    holder_name=row.name,
                    token=row.token,
                    acquired_at=row.acquired_at,
                    expires_at=row.expires_at,
                    expired=_expired(row.expires_at, now),
                )
                for row in connection.execute(statement)
            ]

    def view(self, now: datetime | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> ClusterView:
        """``nodes`` and ``leases`` at the same ``now`` (a moment apart in the database: two reads)."""
        now = self._now(now)
        found = self.nodes(now, lease_seconds)
        return ClusterView(now, lease_seconds, tuple(found), tuple(self.leases(now)))

    def prune_nodes(self, now: datetime | None = None, *, kept: timedelta = NODES_KEPT) -> int:
        """Delete the rows of nodes with no sign of life within ``kept`` of ``now``; returns how many.

        A node that a lease row still names is kept: the lease shows who held the work last.
        """
        before = self._now(now) - kept
        n = nodes.c
        named = sa.select(leases.c.holder).where(leases.c.holder.is_not(None))
        statement = sa.delete(nodes).where(
            n.heartbeat_at < before,
            sa.or_(n.stopped_at.is_(None), n.stopped_at < before),
            n.id.not_in(named),
        )
        # TRANSACTION: the forgotten nodes, all at once (a lease naming one keeps it).
        with store_errors("pruning old nodes"), self._engine.begin() as connection:
            return connection.execute(statement).rowcount

    def _now(self, now: datetime | None) -> datetime:
        moment = self._clock() if now is None else now
        require_aware(moment, "now")
        return moment


def _held_by(connection: sa.Connection, node_ids: list[int], now: datetime) -> dict[int, list[HeldLease]]:
    """The lease rows each of ``node_ids`` holds, by key."""
    if not node_ids:
        return {}
    c = leases.c
    statement = (
        sa.select(c.holder, c.key, c.token, c.acquired_at, c.expires_at)
        .where(c.holder.in_(node_ids))
        .order_by(c.key)
    )
    held: dict[int, list[HeldLease]] = {}
    for row in connection.execute(statement):
        lease = HeldLease(row.key, row.token, row.acquired_at, row.expires_at, _expired(row.expires_at, now))
        held.setdefault(row.holder, []).append(lease)
    return held


def _state(stopped_at: datetime | None, heartbeat_at: datetime, now: datetime, stale: timedelta) -> NodeState:
    if stopped_at is not None:
        return NodeState.STOPPED
    return NodeState.DEAD if now - heartbeat_at > stale else NodeState.ALIVE


def _expired(expires_at: datetime | None, now: datetime) -> bool:
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
