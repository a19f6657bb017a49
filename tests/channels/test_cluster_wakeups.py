"""Two engine nodes on one PostgreSQL store wake each other: work left on one is done by the other at once.

Each node's idle poll is 30 s and every wait here is bounded well below it, so what finishes in
time can only have been woken.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engine.channels.leases import channel_key, queue_key
from engine.channels.wakeups import peer_address
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.model import utc_now
from engine.service import Engine
from tests.fakes.cluster import cluster_config
from tests.fakes.downstream import Downstream, Gate
from tests.fakes.harness import in_thread, port_of, wait_until

POLL = 30.0  # the idle poll: nothing here may wait for it
WITHIN = 10.0  # every wait's bound
KEYS = (channel_key("adt"), queue_key("adt", "emr"))

pytestmark = pytest.mark.postgres


def _send(port: int, control_id: str) -> str:
    """One ADT to the engine on ``port``: the code it answers, within WITHIN seconds or an error."""
    message = (
        "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|"
        f"{control_id}|P|2.5.1\rPID|1||1^^^PMS^MR||DOE^JOHN\r"
    ).encode()
    with MLLPClient("127.0.0.1", port, timeout=WITHIN) as client:
        return parse_reply(client.request(message)).code


@pytest.fixture
def nodes(tmp_path, postgres_url):
    """``start(respond)``: a downstream; node a holding all the work; node b holding none, sharing the store.

    Fires with (downstream, a, b, events of a, events of b) once each node knows the other as a peer.
    """
    downstream = Downstream()
    started: list[Engine] = []

    @defer.inlineCallbacks
    def start(respond: str):
        port = downstream.start()
        events = {"a": [], "b": []}
        for node in ("a", "b"):
            engine = Engine(
                cluster_config(
                    tmp_path,
                    postgres_url,
                    node,
                    port,
                    lease_seconds=3,
                    renew_seconds=0.5,
                    poll_seconds=POLL,
                    respond=respond,
                ),
                reactor,
                observer=lambda event, fields, seen=events[node]: seen.append((event, fields)),
            )
            engine.startService()
            started.append(engine)
            if node == "a":  # a takes every key first; one channel and one queue: b's fair share is none
                yield wait_until(lambda e=engine: all(e.leases.holds(key) for key in KEYS), seconds=WITHIN)
        a, b = started
        yield wait_until(lambda: a.leases.peers() and b.leases.peers(), seconds=WITHIN)
        return downstream, a, b, events["a"], events["b"]

    yield start
    for engine in started:
        pytest_twisted.blockon(engine.stopService())
    pytest_twisted.blockon(downstream.stop())


def _woken(events, key: str) -> bool:
    return ("wakeup", {"key": key}) in events


@pytest_twisted.inlineCallbacks
def test_each_node_registers_where_it_listens_and_its_peers_are_the_other_live_nodes(nodes):
    """A node's wake_address is the address its wake-ups listen on; its peers are the others', not its own."""
    _, a, b, _, _ = yield nodes("after_store")
    assert a.leases.peers() == [peer_address(b.wakeups.address)]
    assert b.leases.peers() == [peer_address(a.wakeups.address)]
    live = yield a.store.live_nodes(utc_now(), 3)
    registered = {node.name: node.wake_address for node in live}
    assert registered == {"a": a.wakeups.address, "b": b.wakeups.address}


@pytest_twisted.inlineCallbacks
def test_a_message_taken_in_by_the_node_without_the_channel_is_processed_and_delivered_by_the_other(nodes):
    """b stores the message RECEIVED and wakes a, which processes and delivers it long before its poll."""
    downstream, a, b, a_events, b_events = yield nodes("after_store")
    sent_at = reactor.seconds()
    assert (yield in_thread(_send, port_of(b), "C0001")) == "AA"
    yield wait_until(lambda: downstream.received, seconds=WITHIN)
    assert reactor.seconds() - sent_at < WITHIN < POLL
    assert [payload.split(b"|")[9] for payload in downstream.received] == [b"C0001"]
    assert _woken(a_events, channel_key("adt"))
    # b held no lease all along: the queue's wake-up a sent it changed nothing there.
    assert not any(b.leases.holds(key) for key in KEYS)
    assert not any(event == "processed" for event, _ in b_events)


@pytest_twisted.inlineCallbacks
def test_an_after_processing_sender_on_one_node_is_answered_once_the_other_delivered(nodes):
    """The answer to b's sender waits for a's delivery: none while the partner holds its ACK, AA after."""
    downstream, a, b, a_events, _ = yield nodes("after_processing")
    gate = Gate()
    downstream.script(gate)
    answer = in_thread(_send, port_of(b), "C0002")
    yield wait_until(lambda: gate.arrived.called, seconds=WITHIN)
    # b looks up its sender's outcome every 50 ms meanwhile: the delivery is in flight, no answer.
    yield deferLater(reactor, 0.5, lambda: None)
    assert not answer.called
    gate.release()
    assert (yield answer) == "AA"
    assert _woken(a_events, channel_key("adt"))
    assert a.leases.holds(queue_key("adt", "emr")) and not b.leases.holds(queue_key("adt", "emr"))
