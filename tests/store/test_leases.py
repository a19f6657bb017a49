"""engine.store.leases: nodes, claiming, renewing, releasing and fencing leases, both backends."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from engine.errors import LeaseLost, StoreError
from engine.model import AttemptResult, LeaseToken, Outcome, Status
from engine.store.leases import LeaseRepository
from engine.store.schema import deliveries, messages
from tests.fakes.store import NOW, queued

LATER = NOW + timedelta(seconds=10)


@pytest.fixture
def leases(engine):
    """A LeaseRepository on a freshly migrated database."""
    return LeaseRepository(engine)


def _node(leases: LeaseRepository, name: str = "a", roles=("processing", "delivery")) -> int:
    return leases.register_node(name, "host", 123, roles, "127.0.0.1:9", NOW)


def _rows(engine) -> dict[str, tuple]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT key, holder, token FROM leases")).all()
    return {key: (holder, token) for key, holder, token in rows}


def test_live_nodes_are_those_with_a_recent_heartbeat_and_not_stopped(leases):
    """A node counts while its heartbeat is within the lease; a stop or a stale heartbeat drops it."""
    a = _node(leases, "a", ("delivery", "processing"))
    b = _node(leases, "b", ("intake",))
    c = _node(leases, "c")
    leases.heartbeat(a, NOW + timedelta(seconds=20))
    leases.heartbeat(b, NOW + timedelta(seconds=20))
    leases.node_stopped(b, NOW + timedelta(seconds=21))
    live = leases.live_nodes(NOW + timedelta(seconds=25), 10)
    assert [(n.id, n.name, n.roles, n.wake_address) for n in live] == [
        (a, "a", frozenset({"delivery", "processing"}), "127.0.0.1:9")
    ]
    assert c not in [n.id for n in live]


def test_ensure_keys_adds_missing_rows_only(leases, engine):
    """Adding keys twice leaves one free row each, a held row untouched."""
    node = _node(leases)
    leases.ensure_keys(["channel:adt", "queue:adt/emr"])
    [token] = leases.claim(node, ["channel:adt"], 1, NOW, LATER)
    leases.ensure_keys(["channel:adt", "queue:adt/emr", "job:retention"])
    assert _rows(engine) == {
        "channel:adt": (node, token.token),
        "queue:adt/emr": (None, 0),
        "job:retention": (None, 0),
    }


def test_claim_takes_free_keys_up_to_n_and_never_a_held_one(leases):
    """A claim takes at most n free keys in key order, each with token + 1; a held key is skipped."""
    a, b = _node(leases, "a"), _node(leases, "b")
    keys = ["k1", "k2", "k3"]
    leases.ensure_keys(keys)
    assert leases.claim(a, keys, 2, NOW, LATER) == [LeaseToken("k1", a, 1), LeaseToken("k2", a, 1)]
    assert leases.claim(b, keys, 3, NOW, LATER) == [LeaseToken("k3", b, 1)]
    assert leases.claim(b, keys, 3, NOW, LATER) == []


def test_an_expired_lease_is_taken_over_with_a_new_token(leases, engine):
    """Past its expiry a lease goes to the next claimant, token + 1; the old holder's renewal loses it."""
    a, b = _node(leases, "a"), _node(leases, "b")
    leases.ensure_keys(["k"])
    [old] = leases.claim(a, ["k"], 1, NOW, LATER)
    assert leases.claim(b, ["k"], 1, LATER - timedelta(seconds=1), LATER) == []
    [new] = leases.claim(b, ["k"], 1, LATER + timedelta(seconds=1), LATER + timedelta(seconds=11))
    assert new == LeaseToken("k", b, 2)
    assert leases.renew(a, [old], LATER + timedelta(seconds=20)) == []
    assert leases.renew(b, [new], LATER + timedelta(seconds=20)) == [new]
    assert _rows(engine) == {"k": (b, 2)}


def test_renew_extends_so_the_lease_is_not_taken(leases):
    """A renewed lease is not expired at its first expiry."""
    a, b = _node(leases, "a"), _node(leases, "b")
    leases.ensure_keys(["k"])
    held = leases.claim(a, ["k"], 1, NOW, LATER)
    assert leases.renew(a, held, LATER + timedelta(seconds=10)) == held
    assert leases.claim(b, ["k"], 1, LATER + timedelta(seconds=1), LATER + timedelta(seconds=11)) == []


def test_release_frees_only_a_holding_still_as_given(leases, engine):
    """Release frees the row at once; a stale token releases nothing of the new holder's."""
    a, b = _node(leases, "a"), _node(leases, "b")
    leases.ensure_keys(["k", "j"])
    old = leases.claim(a, ["k", "j"], 2, NOW, LATER)
    leases.release(old[:1])  # j
    [new_j] = leases.claim(b, ["j"], 1, NOW, LATER)
    leases.release(old)  # j is b's now: left alone; k freed
    assert _rows(engine) == {"j": (b, new_j.token), "k": (None, 1)}
    assert leases.claim(b, ["k"], 1, NOW, LATER) == [LeaseToken("k", b, 2)]


def test_concurrent_claims_never_take_one_key_twice(leases, engine):
    """Claimants racing on threads share the keys out: every key goes to exactly one of them."""
    keys = [f"k{i:02}" for i in range(40)]
    leases.ensure_keys(keys)
    nodes = [_node(leases, f"n{i}") for i in range(4)]
    taken: dict[int, list[LeaseToken]] = {}
    start = threading.Barrier(len(nodes))

    def claim(node: int) -> None:
        start.wait(timeout=10)
        got = []
        for _ in range(20):
            try:
                got += leases.claim(node, keys, 3, NOW, LATER)
            except StoreError as error:  # a lock timeout under contention: try again
                assert error.transient
        taken[node] = got

    threads = [threading.Thread(target=claim, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = [t.key for got in taken.values() for t in got]
    assert sorted(claimed) == keys
    assert {key: holder for key, (holder, _) in _rows(engine).items()} == {
        t.key: node for node, got in taken.items() for t in got
    }


# Fencing: writes under a lease


def _queued_message(repository, make_message, queues) -> tuple[int, int]:
    [message_id] = repository.insert([make_message(0)])
    [delivery_id] = queues.record_processing([queued(message_id, "emr")])
    return message_id, delivery_id


def test_record_processing_under_a_stale_token_raises_lease_lost_and_writes_nothing(
    leases, repository, queues, make_message, engine
):
    """A channel whose lease was taken over cannot record its results: LeaseLost, still RECEIVED."""
    a, b = _node(leases, "a"), _node(leases, "b")
    leases.ensure_keys(["channel:adt"])
    [old] = leases.claim(a, ["channel:adt"], 1, NOW, LATER)
    [new] = leases.claim(b, ["channel:adt"], 1, LATER + timedelta(seconds=1), LATER + timedelta(seconds=20))
    [message_id] = repository.insert([make_message(0)])
    with pytest.raises(LeaseLost) as raised:
        queues.record_processing([queued(message_id, "emr")], old)
    assert raised.value.key == "channel:adt" and not raised.value.transient
    with engine.connect() as connection:
        assert connection.execute(sa.select(messages.c.status)).scalar_one() == Status.RECEIVED
        assert connection.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one() == 0
    assert len(queues.record_processing([queued(message_id, "emr")], new)) == 1


def test_record_attempts_under_a_stale_token_raises_lease_lost_and_writes_nothing(
    leases, repository, queues, make_message, engine
):
    """A dispatcher whose lease was released cannot record its attempts; the holder's token can."""
    a = _node(leases, "a")
    leases.ensure_keys(["queue:adt/emr"])
    [old] = leases.claim(a, ["queue:adt/emr"], 1, NOW, LATER)
    _, delivery_id = _queued_message(repository, make_message, queues)
    leases.release([old])
    sent = [AttemptResult(delivery_id, Outcome.SENT, NOW)]
    with pytest.raises(LeaseLost):
        queues.record_attempts(sent, old)
    with engine.connect() as connection:
        assert connection.execute(sa.select(deliveries.c.status, deliveries.c.attempts)).one() == (
            Status.QUEUED,
            0,
        )
    [again] = leases.claim(a, ["queue:adt/emr"], 1, NOW, LATER)
    queues.record_attempts(sent, again)
    with engine.connect() as connection:
        assert connection.execute(sa.select(deliveries.c.status)).scalar_one() == Status.SENT
