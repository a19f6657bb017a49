"""engine/store/cluster.py: the nodes as their rows tell (alive, stopped, dead), the leases they hold."""

from __future__ import annotations

from datetime import timedelta

import pytest_twisted
import sqlalchemy as sa

from engine.store.cluster import ClusterRepository
from engine.store.reads import HeldLease, NodeState
from engine.store.schema import nodes
from tests.fakes.cluster import add_lease, add_node
from tests.fakes.store import NOW

LEASE = 10.0


def _states(found) -> list[tuple[str, str]]:
    return [(node.name, node.state) for node in found]


def test_a_node_is_alive_stopped_or_dead_by_its_heartbeat_and_stop(engine):
    """Alive up to a lease's age of heartbeat, dead past it unless it stopped; stopped whatever its age."""
    add_node(engine, "a-fresh", heartbeat_at=NOW - timedelta(seconds=2))
    add_node(engine, "b-edge", heartbeat_at=NOW - timedelta(seconds=LEASE))
    add_node(engine, "c-stale", heartbeat_at=NOW - timedelta(seconds=LEASE, milliseconds=1))
    add_node(
        engine, "d-stopped", heartbeat_at=NOW - timedelta(minutes=5), stopped_at=NOW - timedelta(minutes=5)
    )
    add_node(engine, "e-stopped-just-now", heartbeat_at=NOW, stopped_at=NOW)

    found = ClusterRepository(engine).nodes(NOW, LEASE)

    assert _states(found) == [
        ("a-fresh", NodeState.ALIVE),
        ("b-edge", NodeState.ALIVE),
        ("c-stale", NodeState.DEAD),
        ("d-stopped", NodeState.STOPPED),
        ("e-stopped-just-now", NodeState.STOPPED),
    ]
    assert [node.heartbeat_age for node in found] == [2.0, LEASE, LEASE + 0.001, 300.0, 0.0]
    first = found[0]
    assert first.roles == ("intake", "processing", "delivery", "jobs")
    assert (first.host, first.pid, first.wake_address) == ("host-a", 4242, "127.0.0.1:7000")
    assert first.started_at == NOW - timedelta(seconds=2, hours=1) and first.stopped_at is None
    # A longer lease makes the stale node alive again: the state is the reader's to judge.
    assert _states(ClusterRepository(engine).nodes(NOW, 60.0))[2] == ("c-stale", NodeState.ALIVE)


def test_nodes_gone_for_a_day_are_no_longer_shown(engine):
    """A node stopped or silent for more than a day drops out of the list; its row stays until pruned."""
    add_node(
        engine,
        "stopped-long-ago",
        heartbeat_at=NOW - timedelta(hours=30),
        stopped_at=NOW - timedelta(hours=25),
    )
    add_node(engine, "dead-long-ago", heartbeat_at=NOW - timedelta(hours=25))
    add_node(
        engine, "stopped-today", heartbeat_at=NOW - timedelta(hours=30), stopped_at=NOW - timedelta(hours=23)
    )
    add_node(engine, "dead-today", heartbeat_at=NOW - timedelta(hours=23))
    add_node(engine, "same-name", heartbeat_at=NOW - timedelta(hours=2), stopped_at=NOW - timedelta(hours=2))
    add_node(engine, "same-name", heartbeat_at=NOW, started_at=NOW - timedelta(hours=1))

    found = ClusterRepository(engine).nodes(NOW, LEASE)

    assert _states(found) == [
        ("dead-today", NodeState.DEAD),
        ("same-name", NodeState.STOPPED),  # the earlier start of the same node first
        ("same-name", NodeState.ALIVE),
        ("stopped-today", NodeState.STOPPED),
    ]
    assert _states(ClusterRepository(engine).nodes(NOW, LEASE, shown=timedelta(days=2)))[:2] == [
        ("dead-long-ago", NodeState.DEAD),
        ("dead-today", NodeState.DEAD),
    ]


def test_each_node_comes_with_the_leases_it_holds_and_free_work_is_named(engine):
    """A node lists its leases (expired flagged); free work, or an expired or gone holder's, is unheld."""
    a = add_node(engine, "node-a", heartbeat_at=NOW)
    b = add_node(engine, "node-b", heartbeat_at=NOW - timedelta(seconds=1))
    dead = add_node(engine, "node-c", heartbeat_at=NOW - timedelta(minutes=1))
    add_lease(engine, "channel:adt", a, token=3, expires_at=NOW + timedelta(seconds=8))
    add_lease(engine, "queue:adt/emr", a, token=7, expires_at=NOW + timedelta(seconds=9))
    add_lease(engine, "queue:lab/lis", b, token=2, expires_at=NOW + timedelta(seconds=5))
    add_lease(engine, "channel:lab", dead, token=4, expires_at=NOW - timedelta(seconds=50))
    add_lease(engine, "job:retention", None, token=5, expires_at=None)
    add_lease(engine, "queue:lab/gone", 9999, token=1, expires_at=NOW - timedelta(days=9))

    view = ClusterRepository(engine).view(NOW, LEASE)

    by_name = {node.name: node for node in view.nodes}
    assert by_name["node-a"].leases == (
        HeldLease("channel:adt", 3, NOW - timedelta(seconds=292), NOW + timedelta(seconds=8), False),
        HeldLease("queue:adt/emr", 7, NOW - timedelta(seconds=291), NOW + timedelta(seconds=9), False),
    )
    assert [lease.key for lease in by_name["node-b"].leases] == ["queue:lab/lis"]
    assert by_name["node-c"].state == NodeState.DEAD
    assert [(lease.key, lease.expired) for lease in by_name["node-c"].leases] == [("channel:lab", True)]
    assert [(row.key, row.holder_name, row.held) for row in view.leases] == [
        ("channel:adt", "node-a", True),
        ("channel:lab", "node-c", False),
        ("job:retention", None, False),
        ("queue:adt/emr", "node-a", True),
        ("queue:lab/gone", None, False),
        ("queue:lab/lis", "node-b", True),
    ]
    assert view.unheld == ("channel:lab", "job:retention", "queue:lab/gone")
    shown = view.to_json_dict()
    assert shown["at"] == NOW.isoformat() and shown["unheld"] == list(view.unheld)
    assert shown["nodes"][0]["leases"][0] == {
        "key": "channel:adt",
        "token": 3,
        "acquired_at": (NOW - timedelta(seconds=292)).isoformat(),
        "expires_at": (NOW + timedelta(seconds=8)).isoformat(),
        "expired": False,
    }


def test_a_lease_expires_after_its_expiry_not_at_it(engine):
    """A lease whose expiry is now is still held (a claim takes only one whose expiry is past)."""
    node = add_node(engine, "node-a", heartbeat_at=NOW)
    add_lease(engine, "channel:adt", node, expires_at=NOW)
    add_lease(engine, "channel:lab", node, expires_at=NOW - timedelta(microseconds=1))

    view = ClusterRepository(engine).view(NOW, LEASE)

    assert [(lease.key, lease.expired) for lease in view.nodes[0].leases] == [
        ("channel:adt", False),
        ("channel:lab", True),
    ]
    assert view.unheld == ("channel:lab",)


def test_prune_forgets_nodes_silent_for_a_week_unless_a_lease_names_them(engine):
    """Rows of nodes gone for over a week are deleted; one that a lease row still names is kept."""
    add_node(engine, "old-stopped", heartbeat_at=NOW - timedelta(days=9), stopped_at=NOW - timedelta(days=8))
    add_node(engine, "old-dead", heartbeat_at=NOW - timedelta(days=8))
    named = add_node(engine, "old-holder", heartbeat_at=NOW - timedelta(days=8))
    add_node(
        engine, "stopped-recently", heartbeat_at=NOW - timedelta(days=8), stopped_at=NOW - timedelta(days=6)
    )
    add_node(engine, "alive", heartbeat_at=NOW)
    add_lease(engine, "channel:adt", named, expires_at=NOW - timedelta(days=8))

    repository = ClusterRepository(engine, clock=lambda: NOW)
    assert repository.prune_nodes() == 2
    assert repository.prune_nodes() == 0

    with engine.connect() as connection:
        left = connection.execute(sa.select(nodes.c.name).order_by(nodes.c.id)).scalars().all()
    assert left == ["old-holder", "stopped-recently", "alive"]


@pytest_twisted.inlineCallbacks
def test_the_message_store_reads_the_view_and_prunes_on_its_threads(open_store):
    """MessageStore.cluster_view and prune_nodes answer as Deferreds, at the store's clock."""
    store = open_store(clock=lambda: NOW)
    engine = store.repository.engine
    alive = add_node(engine, "alive", heartbeat_at=NOW)
    add_node(engine, "gone", heartbeat_at=NOW - timedelta(days=10))
    add_lease(engine, "channel:adt", alive, expires_at=NOW + timedelta(seconds=5))

    view = yield store.cluster_view(lease_seconds=LEASE)
    pruned = yield store.prune_nodes()

    assert view.at == NOW and view.lease_seconds == LEASE
    assert [(node.name, node.state, [lease.key for lease in node.leases]) for node in view.nodes] == [
        ("alive", NodeState.ALIVE, ["channel:adt"])
    ]
    assert view.unheld == () and pruned == 1
