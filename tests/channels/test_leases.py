"""engine.channels.leasing: StoreLeases share a store's work fairly, hand it over, take it over."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from engine.channels.leases import LOCAL_LEASES, channel_key, job_key, queue_key
from engine.channels.leasing import StoreLeases
from tests.fakes.harness import wait_until

LEASE = 1.0
RENEW = 0.2
KEYS = [queue_key("adt", f"d{n}") for n in range(6)]


class Work:
    """What a dispatcher does with a key: runs while acquired, stops when lost; every change noted."""

    def __init__(self, leases: StoreLeases, keys=KEYS):
        self.leases = leases
        self.running: set[str] = set()
        self.log: list[tuple[str, str]] = []
        for key in keys:
            leases.watch(key, lambda key=key: self._acquired(key), lambda key=key: self._lost(key))

    def _acquired(self, key: str) -> None:
        assert key not in self.running
        self.running.add(key)
        self.log.append(("acquired", key))

    def _lost(self, key: str) -> None:
        self.running.discard(key)
        self.log.append(("lost", key))


@pytest.fixture
def leases_on(open_store):
    """``leases_on(name)``: a started StoreLeases on its own MessageStore of the test database."""
    started = []

    @defer.inlineCallbacks
    def make(name: str, roles=("delivery", "processing", "jobs"), store=None):
        store = store or open_store()
        leases = StoreLeases(
            store, reactor=reactor, node=name, roles=roles, lease_seconds=LEASE, renew_every=RENEW
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
    """Its store gone (as if the node died): its work stops by its own reckoning, the other takes over."""
    dying_store = open_store()
    a = Work((yield leases_on("a", store=dying_store)))
    b = Work((yield leases_on("b")))
    yield wait_until(lambda: _split(a, b) == [3, 3], seconds=5)
    taken_from_a = set(a.running)
    yield dying_store.stop()
    stopped_at = reactor.seconds()
    yield wait_until(lambda: b.running == set(KEYS), seconds=LEASE + RENEW * 5)
    assert reactor.seconds() - stopped_at >= LEASE - RENEW  # not before the lease expired
    yield wait_until(lambda: a.running == set(), seconds=RENEW * 3)
    assert all(("lost", key) in a.log for key in taken_from_a)
    assert not any(a.leases.holds(key) for key in KEYS)


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
