"""engine.store.pruner: the engine's retention schedule, a batch per writer call, intake served between."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor

from engine.model import Status
from engine.store.audit import AuditRepository
from engine.store.pruner import Pruner
from engine.store.reads import MessageQuery
from engine.store.retention import RetentionPolicy
from engine.store.schema import messages, nodes
from tests.fakes.cluster import add_node
from tests.fakes.store import NOW, later

OLD = NOW - timedelta(days=10)


def _pruner(store, *, every: float = 60.0, batch: int = 50) -> Pruner:
    """A pruner of channel adt's content older than a day, whose clock stands at NOW."""
    policy = RetentionPolicy({"adt": 1})
    return Pruner(store, lambda: policy, reactor=reactor, every=every, batch=batch, clock=lambda: NOW)


def _old_messages(make_message, count: int):
    return [make_message(n, channel="adt", status=Status.SENT, received_at=OLD) for n in range(count)]


def _pruned_count(store) -> int:
    with store.repository.engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).where(messages.c.pruned_at.is_not(None))
        ).scalar_one()


@pytest_twisted.inlineCallbacks
def test_the_schedule_prunes_and_writes_the_audit_trail(open_store, make_message):
    """Started, the pruner runs after `every` seconds, prunes every due message and audits the run."""
    store = open_store()
    yield store.add(_old_messages(make_message, 120))
    pruner = _pruner(store, every=0.05, batch=50)
    pruner.start()
    audit = AuditRepository(store.repository.engine)
    deadline = time.monotonic() + 10
    # The audit row is the run's last write (after the batches and the space given back): wait for it,
    # as a stop that came between would end the run before it.
    while not audit.recent(10) and time.monotonic() < deadline:
        yield later(0.05, lambda: None)
    yield pruner.stop()
    assert _pruned_count(store) == 120
    entries = audit.recent(10)
    assert [(e.action, e.user) for e in entries] == [("prune", "engine")]
    assert entries[0].detail.startswith("pruned 120 message(s) (adt 120)")


@pytest_twisted.inlineCallbacks
def test_intake_commits_between_batches_of_a_prune(store, make_message):
    """A message added while a long prune runs is committed after one batch, not after the whole prune."""
    yield store.add(_old_messages(make_message, 2000))
    pruning = _pruner(store, batch=50).run_once()
    deadline = time.monotonic() + 10
    while _pruned_count(store) == 0 and time.monotonic() < deadline:
        yield later(0.001, lambda: None)
    asked_at = _pruned_count(store)
    yield store.add([make_message(5000, channel="adt")])
    committed_at = _pruned_count(store)
    assert not pruning.called  # the prune goes on
    assert 0 < asked_at and committed_at - asked_at <= 100  # the batch in hand, and one more at most
    assert (yield pruning).total.messages == 2000
    assert (yield store.count(MessageQuery(status=Status.RECEIVED))) == 1


@pytest_twisted.inlineCallbacks
def test_stop_waits_for_the_batch_in_hand_and_starts_no_other(store, make_message):
    """stop() during a run fires once the batch in hand committed; the rest waits for the next start."""
    yield store.add(_old_messages(make_message, 1000))
    pruner = _pruner(store, every=0.01, batch=10)
    pruner.start()
    deadline = time.monotonic() + 10
    while _pruned_count(store) == 0 and time.monotonic() < deadline:
        yield later(0.002, lambda: None)
    yield pruner.stop()
    stopped_at = _pruned_count(store)
    yield later(0.1, lambda: None)
    assert 0 < stopped_at < 1000 and stopped_at % 10 == 0
    assert _pruned_count(store) == stopped_at


@pytest_twisted.inlineCallbacks
def test_a_run_forgets_engine_processes_gone_for_a_week(open_store):
    """Each run also deletes the rows of nodes silent for a week (nothing else to prune); live ones stay."""
    store = open_store(clock=lambda: NOW)
    engine = store.repository.engine
    add_node(engine, "gone", heartbeat_at=NOW - timedelta(days=8))
    add_node(engine, "alive", heartbeat_at=NOW)
    policy = RetentionPolicy({})
    pruner = Pruner(store, lambda: policy, reactor=reactor, every=60.0, batch=50, clock=lambda: NOW)
    summary = yield pruner.run_once()
    assert summary.total.messages == 0
    with engine.connect() as connection:
        assert connection.execute(sa.select(nodes.c.name)).scalars().all() == ["alive"]
