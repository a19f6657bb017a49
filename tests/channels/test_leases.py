"""engine.channels.leasing: StoreLeases share a store's work fairly, hand it over, take it over."""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from engine.channels.destinations.mllp import MLLPDestination
from engine.channels.destinations.spec import MllpSettings
from engine.channels.dispatcher import Dispatcher, RetryPolicy
from engine.channels.leases import LOCAL_LEASES, channel_key, job_key, queue_key
from engine.channels.leasing import StoreLeases
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.model import NewDelivery, ProcessingResult, Status, utc_now
from engine.service import Engine
from engine.serviceparts import RETENTION_KEY
from engine.store.db import create_engine_for
from engine.store.pruner import Pruner
from engine.store.retention import RetentionPolicy
from engine.store.schema import deliveries
from engine.store.schema import leases as leases_table
from tests.fakes.cluster import cluster_config
from tests.fakes.downstream import Downstream, Gate
from tests.fakes.harness import in_thread, port_of, start_engine, wait_until
from tests.fakes.messages import pms_message
from tests.fakes.outbound import message

LEASE = 1.0
RENEW = 0.2
KEYS = [queue_key("adt", f"d{n}") for n in range(6)]


class Work:
    """What a dispatcher does with a key: runs while acquired, stops when lost; every change noted."""

    def __init__(self, leases: StoreLeases, keys=KEYS):
        self.leases = leases
        self.running: set[str] = set()
        self.log: list[tuple[str, str]] = []
        self.at: dict[tuple[str, str], float] = {}  # (event, key) -> when it last happened
        for key in keys:
            leases.watch(key, lambda key=key: self._acquired(key), lambda key=key: self._lost(key))

    def _acquired(self, key: str) -> None:
        assert key not in self.running
        self.running.add(key)
        self.log.append(("acquired", key))
        self.at["acquired", key] = reactor.seconds()

    def _lost(self, key: str) -> None:
        self.running.discard(key)
        self.log.append(("lost", key))
        self.at["lost", key] = reactor.seconds()


@pytest.fixture
def leases_on(open_store):
    """``leases_on(name)``: a started StoreLeases on its own MessageStore of the test database."""
    started = []

    @defer.inlineCallbacks
    def make(name: str, roles=("delivery", "processing", "jobs"), store=None, observer=None):
        store = store or open_store()
        leases = StoreLeases(
            store,
            reactor=reactor,
            node=name,
            roles=roles,
            lease_seconds=LEASE,
            renew_every=RENEW,
            observer=observer,
        )
        yield leases.start()
        started.append(leases)
        return leases

    yield make
    for leases in started:
        pytest_twisted.blockon(leases.stop())


def _split(*works: Work) -> list[int]:
    running = [w.running for w in works]
    for i, keys in enumerate(running):  # never one key in two places
        for other in running[i + 1 :]:
            assert not keys & other
    return sorted(len(keys) for keys in running)


@pytest_twisted.inlineCallbacks
def test_two_processes_split_the_keys_fairly_and_a_third_joining_rebalances(leases_on):
    """6 keys: 3 and 3 between two; a third joins and each ends with 2, none held twice on the way."""
    a = Work((yield leases_on("a")))
    yield wait_until(lambda: a.running == set(KEYS), seconds=5)
    b = Work((yield leases_on("b")))
    yield wait_until(lambda: _split(a, b) == [3, 3], seconds=5)
    c = Work((yield leases_on("c")))
    yield wait_until(lambda: _split(a, b, c) == [2, 2, 2], seconds=5)
    assert {key for w in (a, b, c) for key in w.running} == set(KEYS)
    for work in (a, b, c):
        assert [key for key, _, _ in work.leases.holdings()] == sorted(work.running)


@pytest_twisted.inlineCallbacks
def test_a_clean_stop_hands_every_key_over_at_once(leases_on):
    """Stopping one process releases its keys: the other holds them all within one renewal."""
    a = Work((yield leases_on("a")))
    b = Work((yield leases_on("b")))
    yield wait_until(lambda: _split(a, b) == [3, 3], seconds=5)
    yield a.leases.stop()
    assert a.running == set()
    yield wait_until(lambda: b.running == set(KEYS), seconds=RENEW * 3)


@pytest_twisted.inlineCallbacks
def test_a_process_that_stops_renewing_loses_its_keys_to_the_other(leases_on, open_store):
    """Its store gone (as if it died): its work stops by its own reckoning, then the other takes over."""
    dying_store = open_store()
    a = Work((yield leases_on("a", store=dying_store)))
    b = Work((yield leases_on("b")))
    yield wait_until(lambda: _split(a, b) == [3, 3], seconds=5)
    taken_from_a = set(a.running)
    yield dying_store.stop()
    stopped_at = reactor.seconds()
    yield wait_until(lambda: b.running == set(KEYS), seconds=LEASE + RENEW * 5)
    assert reactor.seconds() - stopped_at >= LEASE - RENEW  # not before the lease expired
    assert a.running == set()
    for key in taken_from_a:  # never both at work on one key
        assert a.at["lost", key] < b.at["acquired", key]
    assert not any(a.leases.holds(key) for key in KEYS)


@pytest_twisted.inlineCallbacks
def test_the_metrics_see_the_leases_held_and_each_one_lost(leases_on, open_store):
    """The observer hears how many leases the process holds after each round, and every lease it loses."""
    seen: list[tuple[str, dict]] = []
    dying_store = open_store()
    a = Work(
        (yield leases_on("a", store=dying_store, observer=lambda event, fields: seen.append((event, fields))))
    )
    yield wait_until(lambda: a.running == set(KEYS) and ("leases_held", {"count": 6}) in seen, seconds=5)
    b = Work((yield leases_on("b")))
    yield wait_until(lambda: _split(a, b) == [3, 3] and seen[-1] == ("leases_held", {"count": 3}), seconds=5)
    assert [fields["key"] for event, fields in seen if event == "lease_lost"] == []  # handed over, not lost
    yield dying_store.stop()
    lost_expected = {
        ("lease_lost", key) for key in KEYS if ("acquired", key) in a.at and key not in b.running
    }
    yield wait_until(lambda: b.running == set(KEYS), seconds=LEASE + RENEW * 5)
    lost = {(event, fields["key"]) for event, fields in seen if event == "lease_lost"}
    assert lost == lost_expected and len(lost) == 3
    assert seen[-1] == ("leases_held", {"count": 0})


@pytest_twisted.inlineCallbacks
def test_each_kind_is_shared_among_the_processes_with_its_role(leases_on):
    """A process without the delivery role takes no queue and does not count in the queues' share."""
    keys = [*KEYS, channel_key("adt"), job_key("retention")]
    a = Work((yield leases_on("a", roles=("processing", "jobs"))), keys)
    b = Work((yield leases_on("b", roles=("delivery",))), KEYS)
    yield wait_until(lambda: b.running == set(KEYS), seconds=5)
    yield wait_until(lambda: a.running == {channel_key("adt"), job_key("retention")}, seconds=5)
    assert b.leases.token(KEYS[0]).holder == b.leases.node_id


@pytest_twisted.inlineCallbacks
def test_unwatch_releases_the_key_for_another_process(leases_on):
    """A key no longer watched (its channel stopped) is released: another process takes it."""
    a = Work((yield leases_on("a")), KEYS[:1])
    yield wait_until(lambda: a.running == set(KEYS[:1]), seconds=5)
    b = Work((yield leases_on("b")), KEYS[:1])
    yield a.leases.unwatch(KEYS[0])
    assert not a.leases.holds(KEYS[0])
    yield wait_until(lambda: b.running == set(KEYS[:1]), seconds=RENEW * 3)


def test_local_leases_hold_every_key_without_a_token():
    """The engine alone on its store: held at once, never a token."""
    acquired = []
    LOCAL_LEASES.watch("queue:a/b", lambda: acquired.append(True), lambda: None)
    assert acquired == [True]
    assert LOCAL_LEASES.holds("anything") and LOCAL_LEASES.token("anything") is None


# The retention job


@pytest_twisted.inlineCallbacks
def test_only_the_holder_of_the_retention_job_prunes(leases_on, open_store):
    """Two processes' pruners on one store: only the lease holder's runs; after its stop, the other's."""
    runs = {"a": 0, "b": 0}
    pruners = {}
    for name in ("a", "b"):
        store = open_store()
        leases = yield leases_on(name, store=store)
        leases.watch(RETENTION_KEY, lambda: None, lambda: None)

        def policy(name=name) -> RetentionPolicy:
            runs[name] += 1
            return RetentionPolicy()

        pruners[name] = Pruner(
            store,
            policy,
            reactor=reactor,
            every=0.05,
            batch=10,
            may_run=lambda leases=leases: leases.holds(RETENTION_KEY),
        )
        pruners[name].start()
        if name == "a":
            yield wait_until(lambda leases=leases: leases.holds(RETENTION_KEY), seconds=5)
            first = leases
    try:
        yield wait_until(lambda: runs["a"] >= 5, seconds=5)
        assert runs["b"] == 0
        yield first.stop()
        yield wait_until(lambda: runs["b"] >= 5, seconds=RENEW * 3 + 1)
    finally:
        for pruner in pruners.values():
            yield pruner.stop()


# Two engines on one PostgreSQL store


def _adt(n: int) -> bytes:
    return (
        "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|"
        f"C{n:04d}|P|2.5.1\rPID|1||{n}^^^PMS^MR||DOE^JOHN\r"
    ).encode()


def _send(port: int, numbers) -> list[str]:
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        return [parse_reply(client.request(_adt(n))).code for n in numbers]


def _control_ids(payloads: list[bytes]) -> list[str]:
    return [payload.split(b"|")[9].decode() for payload in payloads]


def _deliveries_in_id_order(url: str) -> list[str]:
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(deliveries.c.control_id).order_by(deliveries.c.id))
            return [control_id for (control_id,) in rows]
    finally:
        engine.dispose()


@pytest.fixture
def two_engines(tmp_path, postgres_url):
    """``start()``: a downstream and two engines (nodes a, b) on one PostgreSQL store; all stopped after."""
    downstream = Downstream()
    started = []

    def start() -> tuple[Downstream, Engine, Engine]:
        port = downstream.start()
        for node in ("a", "b"):
            config = cluster_config(
                tmp_path, postgres_url, node, port, lease_seconds=LEASE * 3, renew_seconds=RENEW * 3
            )
            started.append(start_engine(config))
        return downstream, *started

    yield start
    for engine in started:
        if engine.running:
            pytest_twisted.blockon(engine.stopService())
    pytest_twisted.blockon(downstream.stop())


@pytest.mark.postgres
@pytest_twisted.inlineCallbacks
def test_two_engines_deliver_every_message_once_in_delivery_id_order(two_engines, postgres_url):
    """Messages sent to both nodes at once: each delivered exactly once, in the order of delivery ids."""
    downstream, a, b = two_engines()
    codes = yield defer.gatherResults(
        [
            in_thread(_send, port_of(a), range(0, 40)),
            in_thread(_send, port_of(b), range(100, 140)),
        ]
    )
    assert set(codes[0] + codes[1]) == {"AA"}
    yield wait_until(lambda: len(downstream.received) >= 80, seconds=30)
    received = _control_ids(downstream.received)
    assert sorted(received) == sorted([f"C{n:04d}" for n in (*range(0, 40), *range(100, 140))])
    assert received == (yield in_thread(_deliveries_in_id_order, postgres_url))
    assert not a.channels["adt"].processes_at_intake and not b.channels["adt"].processes_at_intake


@pytest.mark.postgres
@pytest_twisted.inlineCallbacks
def test_a_node_stopped_mid_stream_hands_its_work_to_the_other(two_engines, postgres_url):
    """The processing node stops while both take messages: the other takes all over in time, delivers all."""
    downstream, a, b = two_engines()
    keys = {channel_key("adt"), queue_key("adt", "emr")}
    yield wait_until(lambda: all(a.leases.holds(k) or b.leases.holds(k) for k in keys), seconds=10)
    stopping, staying = (a, b) if a.leases.holds(channel_key("adt")) else (b, a)
    sending = in_thread(_send, port_of(staying), range(100, 160))
    codes = yield in_thread(_send, port_of(stopping), range(0, 30))
    yield stopping.stopService()
    stopped = reactor.seconds()
    lease = a.config.engine.cluster
    # A clean stop released the keys: the next renewal claims them, well before they would expire.
    limit = lease.renew_every * 2 + 0.5
    assert limit < lease.lease_seconds - lease.renew_every
    yield wait_until(lambda: all(staying.leases.holds(k) for k in keys), seconds=limit)
    took_over = reactor.seconds() - stopped
    codes += yield sending
    assert set(codes) == {"AA"}
    yield wait_until(lambda: len(downstream.received) >= 90, seconds=30)
    received = _control_ids(downstream.received)
    assert sorted(received) == sorted([f"C{n:04d}" for n in (*range(0, 30), *range(100, 160))])
    assert received == (yield in_thread(_deliveries_in_id_order, postgres_url))
    assert took_over <= limit


# A dispatcher that loses its lease


@pytest_twisted.inlineCallbacks
def test_a_dispatcher_that_loses_its_lease_finishes_the_send_records_nothing_and_recovers_on_return(
    leases_on, open_store, journals
):
    """Lease taken over mid-send: the answer is not recorded (stale token), the connection closes;
    the lease back, the journalled answer is recorded: SENT, sent once."""
    store = open_store()
    leases = yield leases_on("a", store=store)
    [message_id] = yield store.add([pms_message(1, status=Status.RECEIVED, channel="adt")])
    emr = NewDelivery("emr", Status.QUEUED, "MSG-1", message(1))
    [delivery_id] = yield store.record_processing(
        [ProcessingResult(message_id, Status.QUEUED, deliveries=(emr,))]
    )
    gate = Gate()
    downstream = Downstream()
    downstream.script(gate)
    port = downstream.start()
    destination = MLLPDestination("emr", MllpSettings(host="127.0.0.1", port=port), reactor=reactor)
    dispatcher = Dispatcher(
        "adt",
        destination,
        RetryPolicy(jitter=0),
        store=store,
        journal=journals.journal("adt", "emr"),
        reactor=reactor,
        clock=utc_now,
        on_settled=lambda delivery, result: None,
        observer=lambda *_: None,
        leases=leases,
    )
    key = queue_key("adt", "emr")
    engine = store.repository.engine
    try:
        dispatcher.start()
        yield gate.arrived
        thief = yield store.register_node("b", "host", 2, ["delivery"], None, utc_now())
        yield in_thread(_set_lease, engine, key, thief)  # taken over, as after an expiry
        yield wait_until(lambda: not leases.holds(key), seconds=LEASE)
        gate.release()
        yield wait_until(lambda: dispatcher.stopped and not downstream.factory.connections, seconds=5)
        yield dispatcher.pause_passes()  # paused already: fires once the pass under way wrote (or not)
        assert (yield in_thread(_delivery, engine, delivery_id)) == (Status.QUEUED, 0)
        yield in_thread(_set_lease, engine, key, None)  # the thief let it go: it comes back
        yield wait_until(lambda: leases.holds(key), seconds=5)
        yield wait_until(
            lambda: in_thread(_delivery, engine, delivery_id).addCallback(lambda d: d[0] == Status.SENT),
            seconds=5,
        )
        assert len(downstream.received) == 1
    finally:
        yield dispatcher.stop()
        yield downstream.stop()


def _set_lease(engine: sa.Engine, key: str, holder: int | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.update(leases_table)
            .where(leases_table.c.key == key)
            .values(holder=holder, token=leases_table.c.token + 1, expires_at=None)
        )


def _delivery(engine: sa.Engine, delivery_id: int) -> tuple[str, int]:
    with engine.connect() as connection:
        c = deliveries.c
        return tuple(connection.execute(sa.select(c.status, c.attempts).where(c.id == delivery_id)).one())
