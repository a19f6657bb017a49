"""engine.channels.wakeups: keys between processes over loopback UDP, strangers ignored, bursts coalesced."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater

from engine.channels import dispatcher as dispatcher_module
from engine.channels.channel import Channel
from engine.channels.dispatcher import Dispatcher, RetryPolicy
from engine.channels.passes import IDLE_POLL_SECONDS
from engine.channels.pipeline import DestinationStages, Pipeline
from engine.channels.spec import ChannelConfig
from engine.channels.wakeups import MAX_KEY_BYTES, Wakeups, peer_address, urgent_key
from engine.model import Outcome, Status, utc_now
from tests.fakes.channels import GatedDestination, ScriptedDestination, message_row
from tests.fakes.harness import wait_until


def _wakeups(peers: list[tuple[str, int]], arrived: list[str], prefix: str = "") -> Wakeups:
    wakeups = Wakeups(reactor=reactor, peers=lambda: peers)
    wakeups.start()
    wakeups.subscribe(prefix, arrived.append)
    return wakeups


def _addr(wakeups: Wakeups) -> tuple[str, int]:
    return peer_address(wakeups.address)


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


# A channel whose deliveries are done by another process: two stores on one database, each with
# its wake-ups, the intake and processing side a Channel without dispatchers of its own, the
# delivery side the queue's Dispatcher.


class Sides:
    """The processing side (channel adt, waiters) and the delivery side (its lab queue) of one store."""

    def __init__(self, open_store, journals, lab, *, outcome_poll_seconds: float, delivery_tells: bool):
        self.processing_store, self.delivery_store = open_store(), open_store()
        processing_peers: list[tuple[str, int]] = []
        delivery_peers: list[tuple[str, int]] = []
        self.processing_wakeups = _wakeups(processing_peers, [])
        self.delivery_wakeups = _wakeups(delivery_peers, [])
        processing_peers.append(_addr(self.delivery_wakeups))
        delivery_peers.append(_addr(self.processing_wakeups))
        self.outcome_reads = 0
        self.started = False
        outcomes = self.processing_store.outcomes

        def counted(ids):
            self.outcome_reads += 1
            return outcomes(ids)

        self.processing_store.outcomes = counted
        spec = ChannelConfig(name="adt", source="main", accept={"types": ["*"]}, respond="after_processing")
        self.channel = Channel(
            spec,
            pipeline=Pipeline(destinations=[DestinationStages("lab")]),
            destinations=[],  # delivered by the other side
            store=self.processing_store,
            journals=journals,
            reactor=reactor,
            wakeups=self.processing_wakeups,
            outcome_poll_seconds=outcome_poll_seconds,
        )
        self.lab = lab
        self.dispatcher = Dispatcher(
            "adt",
            self.lab,
            RetryPolicy(),
            store=self.delivery_store,
            journal=journals.journal("adt", "lab"),
            reactor=reactor,
            clock=utc_now,
            on_settled=lambda delivery, result: None,
            observer=lambda *_: None,
            wakeups=self.delivery_wakeups if delivery_tells else None,
        )
        if not delivery_tells:  # woken for its queue, but it never tells what settled
            self.delivery_wakeups.on_key(urgent_key("adt", "lab"), self.dispatcher.hurry)

    @defer.inlineCallbacks
    def wait_for_message(self, n: int):
        """Start both sides (the first time); receive, store and wait for message n as the intake does.

        Fires with the list its answer is put in.
        """
        if not self.started:
            self.started = True
            self.dispatcher.start()
            self.channel.start()
        text = ADT_TEXT.format(n=n)
        receipt = self.channel.receive(text, "utf-8", f"C{n:04d}")
        assert receipt.result is None  # after_processing: stored RECEIVED, processed by a pass
        [message_id] = yield self.processing_store.add([message_row(n, text.encode())])
        self.channel.stored([(receipt, message_id)])
        answered: list[tuple] = []
        self.channel.wait_for(message_id, timeout=30).addCallback(answered.append)
        return answered

    @defer.inlineCallbacks
    def stop(self):
        yield self.channel.stop()
        yield self.dispatcher.stop()
        yield self.processing_wakeups.stop()
        yield self.delivery_wakeups.stop()


ADT_TEXT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C{n:04d}|P|2.5.1\rPID|1||{n}^^^PMS^MR\r"
)


@pytest_twisted.inlineCallbacks
def test_a_sender_is_answered_once_another_process_delivered_on_its_wake_ups(
    monkeypatch, open_store, journals
):
    """Processing wakes the other side's queue; its settling wakes the waiter, answered in one read.

    The outcome poll, the queue's idle poll (IDLE_POLL_SECONDS) and its gathering after a short
    round are longer than the wait: only the wake-ups can have carried it, and the second message
    (its queue's urgent key) cut the gathering that followed the first one's round. Storing a
    message RECEIVED tells the others its channel has work (``channel:adt``).
    """
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 60)
    lab = ScriptedDestination(Outcome.ERROR)  # answers AE
    sides = Sides(open_store, journals, lab, outcome_poll_seconds=60, delivery_tells=True)
    told_to_process: list[str] = []
    sides.delivery_wakeups.subscribe("channel:", told_to_process.append)
    try:
        answered = yield sides.wait_for_message(1)
        yield wait_until(lambda: answered, seconds=IDLE_POLL_SECONDS - 1, step=0.01)
        status, reason, results = answered[0]
        assert sides.lab.sent == ["C0001"]
        assert (status, reason) == (Status.ERROR, "ERROR")
        assert [(r.outcome, r.response_code) for r in results] == [(Outcome.ERROR, "AE")]
        assert sides.outcome_reads == 1
        assert told_to_process == ["channel:adt"]  # the message was stored RECEIVED for the channel
        answered = yield sides.wait_for_message(2)
        yield wait_until(lambda: answered, seconds=IDLE_POLL_SECONDS - 1, step=0.01)
        assert answered[0][0] == Status.SENT and sides.lab.sent == ["C0001", "C0002"]
        assert sides.outcome_reads == 2
    finally:
        yield sides.stop()


@pytest_twisted.inlineCallbacks
def test_without_the_settled_wake_up_the_outcome_poll_answers_the_sender(open_store, journals):
    """A settled wake-up that never comes (lost, or a process that does not send it) only delays."""
    lab = GatedDestination()
    sides = Sides(open_store, journals, lab, outcome_poll_seconds=0.05, delivery_tells=False)
    try:
        answered = yield sides.wait_for_message(1)
        yield wait_until(lambda: lab.in_flight and sides.outcome_reads >= 2, seconds=4, step=0.01)
        assert not answered  # in flight: the polls found nothing to answer
        lab.answer(Outcome.ERROR)
        yield wait_until(lambda: answered, seconds=IDLE_POLL_SECONDS - 1, step=0.01)
        assert answered[0][0] == Status.ERROR and lab.sent == ["C0001"]
        reads = sides.outcome_reads
        yield deferLater(reactor, 0.2, lambda: None)
        assert sides.outcome_reads == reads  # nobody waits: no more polls
    finally:
        yield sides.stop()


@pytest.mark.parametrize(
    ("address", "peer"), [("127.0.0.1:40123", ("127.0.0.1", 40123)), ("[::1]:40123", ("::1", 40123))]
)
def test_a_wake_address_from_the_nodes_table_is_a_peer_address(address, peer):
    """``host:port`` as Wakeups.address writes it (IPv6 in brackets): the (host, port) datagrams come from."""
    assert peer_address(address) == peer


@pytest.mark.parametrize("address", ["", "127.0.0.1", ":40123", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:x"])
def test_anything_else_is_not_a_wake_address(address):
    """A malformed wake_address is refused, not turned into a peer nobody is."""
    with pytest.raises(ValueError, match="not a wake-up address"):
        peer_address(address)
