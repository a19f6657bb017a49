"""Rows of the nodes and leases tables written straight into a store, as running processes leave them."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.store.schema import leases, nodes

ROLES = "intake,processing,delivery,jobs"


def add_node(
    engine: sa.Engine,
    name: str,
    *,
    heartbeat_at: datetime,
    stopped_at: datetime | None = None,
    started_at: datetime | None = None,
    roles: str = ROLES,
    pid: int = 4242,
    host: str = "host-a",
) -> int:
    """Insert a nodes row; its id (started an hour before its heartbeat unless told)."""
    values = {
        "name": name,
        "host": host,
        "pid": pid,
        "roles": roles,
        "wake_address": "127.0.0.1:7000",
        "started_at": started_at or heartbeat_at - timedelta(hours=1),
        "heartbeat_at": heartbeat_at,
        "stopped_at": stopped_at,
    }
    with engine.begin() as connection:
        return connection.execute(sa.insert(nodes).values(values).returning(nodes.c.id)).scalar_one()


def add_lease(
    engine: sa.Engine,
    key: str,
    holder: int | None,
    *,
    expires_at: datetime | None,
    token: int = 1,
    acquired_at: datetime | None = None,
) -> None:
    """Insert a leases row (``holder`` None: free work)."""
    if acquired_at is None and expires_at is not None:
        acquired_at = expires_at - timedelta(minutes=5)
    values = {
        "key": key,
        "holder": holder,
        "token": token,
        "acquired_at": acquired_at,
        "expires_at": expires_at,
    }
    with engine.begin() as connection:
        connection.execute(sa.insert(leases).values(values))
