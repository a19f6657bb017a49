"""engine.channels.wakeups: keys between processes over loopback UDP, strangers ignored, bursts coalesced."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from engine.channels.wakeups import MAX_KEY_BYTES, Wakeups
from tests.fakes.harness import wait_until


def _wakeups(peers: list[tuple[str, int]], arrived: list[str], prefix: str = "") -> Wakeups:
    wakeups = Wakeups(reactor=reactor, peers=lambda: peers)
    wakeups.start()
    wakeups.subscribe(prefix, arrived.append)
    return wakeups


def _addr(wakeups: Wakeups) -> tuple[str, int]:
    host, port = wakeups.address.rsplit(":", 1)
    return host, int(port)


@pytest_twisted.inlineCallbacks
def test_two_processes_wake_each_other_by_key():
    """Each sends a key to its peer over loopback UDP; the peer's subscribers of that prefix hear it."""
    a_peers, b_peers, a_heard, b_heard = [], [], [], []
    a = _wakeups(a_peers, a_heard, prefix="queue:")
    b = _wakeups(b_peers, b_heard, prefix="channel:")
    try:
        a_peers.append(_addr(b))
        b_peers.append(_addr(a))
        a.send("channel:adt")
        b.send("queue:adt/lab")
        b.send("channel:not-for-a")  # a subscribes to queue: only
        yield wait_until(lambda: a_heard and b_heard, seconds=5, step=0.01)
        assert b_heard == ["channel:adt"]
        assert a_heard == ["queue:adt/lab"]
        assert a.ignored == b.ignored == 0
    finally:
        yield a.stop()
        yield b.stop()


@pytest_twisted.inlineCallbacks
def test_a_datagram_from_an_address_that_is_not_a_peer_is_ignored_and_counted():
    """A stranger (not in peers) cannot make the engine look at its store: nothing is called back."""
    heard, stranger_heard = [], []
    peers: list[tuple[str, int]] = []
    target = _wakeups(peers, heard)
    stranger = _wakeups([], stranger_heard)
    try:
        stranger.transport.write(b"channel:adt", _addr(target))
        yield wait_until(lambda: target.ignored == 1, seconds=5, step=0.01)
        peers.append(_addr(stranger))  # once a peer, the same address is heard
        stranger.transport.write(b"channel:adt", _addr(target))
        yield wait_until(lambda: heard, seconds=5, step=0.01)
        assert heard == ["channel:adt"] and target.ignored == 1
    finally:
        yield target.stop()
        yield stranger.stop()


PEER = ("127.0.0.1", 40000)


def _on_clock(arrived: list[str]) -> tuple[Wakeups, Clock]:
    clock = Clock()
    wakeups = Wakeups(reactor=clock, peers=lambda: [PEER])
    wakeups.subscribe("channel:", arrived.append)
    return wakeups, clock


def test_a_burst_of_the_same_key_in_one_turn_calls_back_once():
    """Keys are delivered at the end of the turn: repeats of a key in it are one call, in order of arrival."""
    arrived: list[str] = []
    wakeups, clock = _on_clock(arrived)
    for key in (b"channel:adt", b"channel:lab", b"channel:adt", b"channel:adt"):
        wakeups.datagramReceived(key, PEER)
    assert arrived == []
    clock.advance(0)
    assert arrived == ["channel:adt", "channel:lab"]
    wakeups.datagramReceived(b"channel:adt", PEER)  # the next turn: a new call
    clock.advance(0)
    assert arrived == ["channel:adt", "channel:lab", "channel:adt"]


@pytest.mark.parametrize(
    "datagram", [b"", b"channel:\xff", b"c" * (MAX_KEY_BYTES + 1)], ids=["empty", "not ascii", "too long"]
)
def test_a_datagram_that_is_not_a_key_is_ignored(datagram):
    """Even from a peer, only short ASCII keys are taken."""
    arrived: list[str] = []
    wakeups, clock = _on_clock(arrived)
    wakeups.datagramReceived(datagram, PEER)
    clock.advance(0)
    assert arrived == [] and wakeups.ignored == 1


def test_a_failing_subscriber_does_not_keep_the_key_from_the_others():
    """One subscriber raising is logged; the others of the key are still called, and unsubscribe works."""
    arrived: list[str] = []
    wakeups, clock = _on_clock(arrived)

    def broken(key: str) -> None:
        raise RuntimeError("subscriber bug")

    wakeups.subscribe("channel:", broken)
    later: list[str] = []
    unsubscribe = wakeups.subscribe("channel:", later.append)
    wakeups.datagramReceived(b"channel:adt", PEER)
    clock.advance(0)
    assert arrived == later == ["channel:adt"]
    unsubscribe()
    wakeups.datagramReceived(b"channel:lab", PEER)
    clock.advance(0)
    assert later == ["channel:adt"] and arrived[-1] == "channel:lab"


def test_a_key_too_long_for_a_datagram_is_refused():
    """Keys are small; a longer one is a programming error, not silently cut."""
    wakeups, _ = _on_clock([])
    with pytest.raises(ValueError, match="at most"):
        wakeups.send("queue:" + "x" * MAX_KEY_BYTES)
