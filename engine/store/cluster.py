"""What the store says of the engine processes that share it: the nodes, their heartbeats, their leases.

The rows are written by the processes themselves (their ``StoreLeases``): a ``nodes`` row per
process start, its heartbeat renewed, and a ``leases`` row per piece of work to hold. This module only
reads them, for people (the console, ``hl7engine nodes``), and forgets nodes long gone.

A node is ``alive`` while its heartbeat is at most ``lease_seconds`` old, ``stopped`` once it said
so on a clean stop, and ``dead`` when its heartbeat went stale without a stop (killed, hung, cut
off): the leases it held expire and other processes take its work over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.model import require_aware, utc_now
from engine.store.defaults import DEFAULT_LEASE_SECONDS
from engine.store.driver import store_errors
from engine.store.reads import (
    NODES_SHOWN,
    ClusterView,
    HeldLease,
    LeaseRow,
    NodeView,
    held_lease,
    lease_row,
    node_view,
)
from engine.store.schema import leases, nodes

__all__ = ["NODES_KEPT", "ClusterRepository"]

#: A node's row is kept for this long after its last sign of life, then pruned.
NODES_KEPT = timedelta(days=7)


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
        return [node_view(row._mapping, held.get(row.id, ()), now, lease_seconds) for row in rows]

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
            return [lease_row(row._mapping, now) for row in connection.execute(statement)]

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
        held.setdefault(row.holder, []).append(held_lease(row._mapping, now))
    return held
