"""Rows of the nodes and leases tables written straight into a store, as running processes leave them.

And the config of one node of an engine cluster on a test database (``cluster_config``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from engine.config import Config, parse_config
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


def two_alive_one_dead(engine: sa.Engine, now: datetime) -> dict[str, int]:
    """Nodes as a store of three nodes at ``now`` holds them, by name with their ids.

    ``node-a`` (alive, 2 s) holds channel:adt and queue:adt/emr; ``node-b`` (alive, 4 s, delivery only)
    holds queue:lab/lis; ``node-c`` (dead, 40 s) still names channel:lab, expired; job:retention is free.
    """
    ids = {
        "node-a": add_node(engine, "node-a", heartbeat_at=now - timedelta(seconds=2), pid=101),
        "node-b": add_node(
            engine,
            "node-b",
            heartbeat_at=now - timedelta(seconds=4),
            roles="delivery",
            pid=102,
            host="host-b",
        ),
        "node-c": add_node(
            engine, "node-c", heartbeat_at=now - timedelta(seconds=40), pid=103, host="host-c"
        ),
    }
    add_lease(engine, "channel:adt", ids["node-a"], token=3, expires_at=now + timedelta(seconds=8))
    add_lease(engine, "queue:adt/emr", ids["node-a"], token=1, expires_at=now + timedelta(seconds=8))
    add_lease(engine, "queue:lab/lis", ids["node-b"], token=2, expires_at=now + timedelta(seconds=6))
    add_lease(engine, "channel:lab", ids["node-c"], token=5, expires_at=now - timedelta(seconds=30))
    add_lease(engine, "job:retention", None, token=0, expires_at=None)
    return ids


def cluster_config(
    tmp_path: Path,
    url: str,
    node: str,
    downstream_port: int,
    *,
    lease_seconds: float,
    renew_seconds: float,
    poll_seconds: float = 1.0,
    respond: str = "after_store",
) -> Config:
    """Node ``node`` of a cluster on the store ``url``: listener main, channel adt to MLLP emr on the port."""
    text = f"""
engine:
  application: HUB
  facility: TEST
  data_dir: {tmp_path / node}
  store:
    url: {url}
  cluster:
    node: {node}
    lease_seconds: {lease_seconds}
    renew_seconds: {renew_seconds}
    poll_seconds: {poll_seconds}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: adt
    source: main
    accept: {{types: ["*"]}}
    respond: {respond}
    destinations:
      - name: emr
        type: mllp
        host: 127.0.0.1
        port: {downstream_port}
        ack_timeout_seconds: 2
        connect_timeout_seconds: 2
        queue:
          retry_initial_seconds: 0.05
          retry_jitter: 0
"""
    return parse_config(text, source=str(tmp_path / f"{node}.yaml"))
