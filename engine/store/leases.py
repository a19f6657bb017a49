"""Nodes and leases in the store: which engine processes share it, and which work each one holds.

Every engine process that shares the store registers a ``nodes`` row at start and beats its
heart in it; a node whose heartbeat is older than the lease is dead. A piece of work that one
process at a time may do is a ``leases`` row (its key): claimed when free or expired, with the
token one higher than before, renewed while held, released on a clean stop. A write made under
a lease checks the row in its own transaction (``hold_in``): a process whose lease was taken over
cannot write, whatever its clock or its network said.

Expiry times are written with the claiming node's clock: the nodes' clocks must be synchronised
(NTP), with a skew well below the lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.errors import LeaseLost
from engine.model import LeaseToken, require_aware
from engine.store.driver import fit_text, store_errors
from engine.store.schema import leases, nodes

__all__ = ["LeaseRepository", "LiveNode"]

_KEYS = sa.bindparam("b_keys", expanding=True)
_NOW = sa.bindparam("b_now", type_=leases.c.expires_at.type)
_EXPIRES = sa.bindparam("b_expires_at", type_=leases.c.expires_at.type)
_HOLDER = sa.bindparam("b_holder", type_=leases.c.holder.type)

# The claim: free or expired rows among the keys asked for, at most ``n``, in key order. On
# PostgreSQL the subquery locks them and skips rows another claim has locked (its transaction
# decides them); SQLite has one writer at a time, so the UPDATE alone is the whole claim.
_FREE = (
    sa.select(leases.c.key)
    .where(leases.c.key.in_(_KEYS), sa.or_(leases.c.holder.is_(None), leases.c.expires_at < _NOW))
    .order_by(leases.c.key)
    .limit(sa.bindparam("b_n"))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    sa.update(leases)
    .where(leases.c.key.in_(_FREE.scalar_subquery()))
    .values(holder=_HOLDER, token=leases.c.token + 1, acquired_at=_NOW, expires_at=_EXPIRES)
    .returning(leases.c.key, leases.c.token)
)
# A holding as a write names it: this key, this holder, this token.
_HELD = sa.and_(
    leases.c.key == sa.bindparam("b_key", type_=leases.c.key.type),
    leases.c.holder == _HOLDER,
    leases.c.token == sa.bindparam("b_token", type_=leases.c.token.type),
)
_RENEW = sa.update(leases).where(_HELD).values(expires_at=_EXPIRES)
_RELEASE = sa.update(leases).where(_HELD).values(holder=None, acquired_at=None, expires_at=None)
# Fencing inside another write's transaction: the row is only touched (on PostgreSQL that locks it
# until the commit, so no claim takes it meanwhile), its expiry is the renewal's business.
_TOUCH = sa.update(leases).where(_HELD).values(token=leases.c.token)
_LIVE = (
    sa.select(nodes.c.id, nodes.c.name, nodes.c.roles, nodes.c.wake_address, nodes.c.heartbeat_at)
    .where(nodes.c.stopped_at.is_(None), nodes.c.heartbeat_at >= sa.bindparam("since"))
    .order_by(nodes.c.id)
)


@dataclass(frozen=True, slots=True)
class LiveNode:
    """An engine process whose heartbeat is recent: who shares the work, and where it hears wake-ups."""

    id: int
    name: str
    roles: frozenset[str]
    wake_address: str | None
    heartbeat_at: datetime


class LeaseRepository:
    """Blocking reads and writes of nodes and leases, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def register_node(
        self, name: str, host: str, pid: int, roles: Iterable[str], wake_address: str | None, now: datetime
    ) -> int:
        """A new ``nodes`` row for this process start; returns its id (the holder of its leases)."""
        require_aware(now, "now")
        values = {
            "name": fit_text(name, nodes.c.name.type.length),
            "host": fit_text(host, nodes.c.host.type.length),
            "pid": pid,
            "roles": ",".join(sorted(roles)),
            "wake_address": wake_address,
            "started_at": now,
            "heartbeat_at": now,
        }
        with store_errors("registering an engine node"), self._engine.begin() as connection:
            return connection.execute(sa.insert(nodes).values(values).returning(nodes.c.id)).scalar_one()

    def heartbeat(self, node_id: int, now: datetime) -> None:
        """The node is alive at ``now``."""
        self._set_node(node_id, "heartbeat", heartbeat_at=now)

    def node_stopped(self, node_id: int, now: datetime) -> None:
        """The node stopped cleanly at ``now``: it counts no more among the live ones."""
        self._set_node(node_id, "stop", stopped_at=now)

    def _set_node(self, node_id: int, action: str, **values: datetime) -> None:
        with store_errors(f"recording an engine node's {action}"), self._engine.begin() as connection:
            connection.execute(sa.update(nodes).where(nodes.c.id == node_id).values(values))

    def ensure_keys(self, keys: Iterable[str]) -> None:
        """A lease row for each key that has none yet (free, token 0)."""
        rows = [{"key": key} for key in sorted(set(keys))]
        if not rows:
            return
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(leases).on_conflict_do_nothing(index_elements=[leases.c.key])
        with store_errors("adding lease keys"), self._engine.begin() as connection:
            connection.execute(statement, rows)

    def claim(
        self, node_id: int, keys: Sequence[str], n: int, now: datetime, expires_at: datetime
    ) -> list[LeaseToken]:
        """Take at most ``n`` of ``keys`` that are free or expired; the tokens taken, in key order."""
        require_aware(now, "now")
        require_aware(expires_at, "expires_at")
        if n < 1 or not keys:
            return []
        parameters = {
            "b_keys": sorted(keys),
            "b_n": n,
            "b_now": now,
            "b_expires_at": expires_at,
            "b_holder": node_id,
        }
        # TRANSACTION: the free rows locked and taken, each with its next token.
        with store_errors("claiming leases"), self._engine.begin() as connection:
            taken = connection.execute(_CLAIM, parameters).all()
        return [LeaseToken(key, node_id, token) for key, token in sorted(taken)]

    def renew(self, node_id: int, tokens: Sequence[LeaseToken], expires_at: datetime) -> list[LeaseToken]:
        """Extend the holdings to ``expires_at``; returns those still held (the others were lost)."""
        require_aware(expires_at, "expires_at")
        kept = []
        # TRANSACTION: every holding extended at once, or none (the store failed: renew again later).
        with store_errors("renewing leases"), self._engine.begin() as connection:
            for lease in tokens:
                if lease.holder != node_id:
                    raise ValueError(f"lease {lease.key} is held by node {lease.holder}, not {node_id}")
                if _run(connection, _RENEW, lease, b_expires_at=expires_at):
                    kept.append(lease)
        return kept

    def release(self, tokens: Sequence[LeaseToken]) -> None:
        """Free the holdings that are still as given (a lease another holder took is left alone)."""
        with store_errors("releasing leases"), self._engine.begin() as connection:
            for lease in tokens:
                _run(connection, _RELEASE, lease)

    def live_nodes(self, now: datetime, lease_seconds: float) -> list[LiveNode]:
        """The nodes not stopped whose heartbeat is at most ``lease_seconds`` old, oldest first."""
        require_aware(now, "now")
        since = now - timedelta(seconds=lease_seconds)
        with store_errors("reading the engine nodes"), self._engine.connect() as connection:
            rows = connection.execute(_LIVE, {"since": since}).all()
        return [
            LiveNode(id_, name, frozenset(filter(None, roles.split(","))), wake, heartbeat)
            for id_, name, roles, wake, heartbeat in rows
        ]


def hold_in(connection: sa.Connection, lease: LeaseToken | None) -> None:
    """Inside a write's transaction: go on only while ``lease`` is still held, else raise LeaseLost.

    None: the write is made under no lease (the engine alone on its store), nothing to check.

    Raised inside the transaction, LeaseLost rolls the whole write back. On PostgreSQL the lease
    row stays locked until the commit, so no other process takes the lease over meanwhile.
    """
    if lease is not None and not _run(connection, _TOUCH, lease):
        raise LeaseLost(lease.key)


def _run(connection: sa.Connection, statement: sa.Update, lease: LeaseToken, **values) -> bool:
    """Run a statement on one holding; whether the row still said so."""
    parameters = {"b_key": lease.key, "b_holder": lease.holder, "b_token": lease.token, **values}
    return connection.execute(statement, parameters).rowcount == 1
