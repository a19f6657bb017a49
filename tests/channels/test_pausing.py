"""engine.channels.pausing and on_error: halt end to end: a real engine, a real MLLP partner, a real store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from engine.channels.leases import queue_key
from engine.model import Status
from engine.store.controls import ControlRepository
from engine.store.db import create_engine_for
from engine.store.reads import WHOLE_CHANNEL
from tests.fakes.cluster import cluster_config
from tests.fakes.dashboard import adt, dashboard_config, send
from tests.fakes.downstream import Downstream, reply
from tests.fakes.harness import in_thread, start_engine, statuses, wait_until


def _config(tmp_path: Path, port: int, on_error: str = "block"):
    return dashboard_config(tmp_path, port, on_error=on_error)


def _received_ids(downstream: Downstream) -> list[str]:
    return [p.split(b"|")[9].decode() for p in downstream.received]


@pytest.fixture
def other(tmp_path):
    """The store as another process (the CLI, another node) sees it: its own SQLAlchemy engine."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    yield ControlRepository(engine)
    engine.dispose()


@pytest_twisted.inlineCallbacks
def test_a_paused_destination_queues_and_drains_in_order_once_resumed(tmp_path, other):
    """Paused from another process, nothing is sent and the queue grows; resumed, it drains in order."""
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(_config(tmp_path, port))
    try:
        yield in_thread(other.pause, "adt", "emr", by="cli:test")
        yield wait_until(lambda: engine.channels["adt"].dispatchers["emr"].held, seconds=5)
        yield in_thread(send, engine.listeners["main"].port, *(adt(n) for n in range(1, 6)))
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: list(s.values()) == [Status.QUEUED] * 5)
        )
        yield deferLater(reactor, 1.5, lambda: None)  # a held dispatcher does not send meanwhile
        assert downstream.received == []
        assert (yield engine.controls.counts(datetime(2000, 1, 1, tzinfo=UTC), [("adt", "emr")])).queues[
            ("adt", "emr")
        ].depth == 5

        assert (yield in_thread(other.resume, "adt", "emr")) is not None
        yield wait_until(lambda: len(downstream.received) == 5, seconds=10)
        assert _received_ids(downstream) == [f"C{n:04d}" for n in range(1, 6)]
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: set(s.values()) == {Status.SENT}))
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_pausing_a_channel_holds_each_of_its_destinations(tmp_path):
    """A whole channel's pause holds its dispatchers; its resume releases them."""
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(_config(tmp_path, port))
    try:
        yield engine.controls.pause("adt", WHOLE_CHANNEL, by="test")
        engine.pause_watch.poll_now()
        yield wait_until(lambda: engine.channels["adt"].dispatchers["emr"].held, seconds=5)
        yield engine.controls.resume("adt", WHOLE_CHANNEL)
        engine.pause_watch.poll_now()
        yield wait_until(lambda: not engine.channels["adt"].dispatchers["emr"].held, seconds=5)
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_halt_stops_at_the_first_error_and_retries_it_first_on_resume(tmp_path, other):
    """on_error: halt: an AE on A01 halts the queue, the A08 waits; resumed, A01 goes first, then A08."""
    downstream = Downstream()
    port = downstream.start()
    downstream.script(reply("AE", 207))  # the first message is refused; everything after is accepted
    engine = start_engine(_config(tmp_path, port, on_error="halt"))
    try:
        yield in_thread(send, engine.listeners["main"].port, adt(1, "A01"), adt(2, "A08"))
        yield wait_until(
            lambda: statuses(engine).addCallback(
                lambda s: s == {"C0001": Status.ERROR, "C0002": Status.QUEUED}
            )
        )
        pauses = yield in_thread(other.pauses)
        assert [(p.channel, p.destination, p.paused_by) for p in pauses] == [("adt", "emr", "on_error: halt")]
        assert pauses[0].halted_delivery is not None and "AE" in pauses[0].reason
        yield deferLater(reactor, 1.5, lambda: None)
        assert _received_ids(downstream) == ["C0001"]  # the A08 never overtook the failed A01

        yield in_thread(other.resume, "adt", "emr")
        yield wait_until(lambda: len(downstream.received) == 3, seconds=10)
        assert _received_ids(downstream) == ["C0001", "C0001", "C0002"]
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": Status.SENT, "C0002": Status.SENT})
        )
        assert (yield in_thread(other.pauses)) == []
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_a_paused_queue_stays_paused_across_a_restart(tmp_path):
    """The pause is in the store: an engine started on it holds the queue from its first moment."""
    downstream = Downstream()
    port = downstream.start()
    config = _config(tmp_path, port)
    engine = start_engine(config)
    yield engine.controls.pause("adt", "emr", by="test")
    yield engine.stopService()
    engine = start_engine(config)
    try:
        assert engine.channels["adt"].dispatchers["emr"].held  # before the first read of the pauses
        yield in_thread(send, engine.listeners["main"].port, adt(1))
        yield deferLater(reactor, 1.5, lambda: None)
        assert downstream.received == []
        assert engine.channels["adt"].dispatchers["emr"].held
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest.mark.postgres
@pytest_twisted.inlineCallbacks
def test_a_pause_written_on_one_node_stops_the_queue_holder_on_another(tmp_path, postgres_url):
    """Two nodes on PostgreSQL: b pauses the queue a holds; a stops, b's messages wait; resumed, a drains."""
    downstream = Downstream()
    port = downstream.start()
    engines = []
    try:
        for node in ("a", "b"):
            config = cluster_config(tmp_path, postgres_url, node, port, lease_seconds=3, renew_seconds=0.5)
            engines.append(start_engine(config))
            if node == "a":  # a takes the queue first
                yield wait_until(lambda e=engines[0]: e.leases.holds(queue_key("adt", "emr")), seconds=10)
        a, b = engines
        yield b.controls.pause("adt", "emr", by="alice")
        yield wait_until(lambda: a.channels["adt"].dispatchers["emr"].held, seconds=3)
        yield in_thread(send, b.listeners["main"].port, adt(1), adt(2))
        yield deferLater(reactor, 1.5, lambda: None)
        assert downstream.received == []

        yield b.controls.resume("adt", "emr")
        yield wait_until(lambda: len(downstream.received) == 2, seconds=10)
        assert _received_ids(downstream) == ["C0001", "C0002"]
    finally:
        for engine in engines:
            yield engine.stopService()
        yield downstream.stop()
