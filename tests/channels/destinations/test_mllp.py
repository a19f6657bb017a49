"""The MLLP destination against a real downstream MLLP receiver on loopback (plain TCP and TLS)."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.task import deferLater

from engine.channels.destinations.mllp import MLLPDestination
from engine.channels.destinations.spec import AckPolicy, MllpSettings, TlsSettings
from engine.model import Outcome
from tests.fakes.certs import self_signed
from tests.fakes.channels import journal_lines
from tests.fakes.downstream import (
    Downstream,
    Gate,
    after,
    hang_up,
    raw,
    reply,
    silence,
    twice,
    wrong_control_id,
)
from tests.fakes.outbound import delivery, message

SENT, RETRY, ERROR = Outcome.SENT, Outcome.RETRY, Outcome.ERROR


@pytest.fixture
def downstream():
    server = Downstream()
    server.start()
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def destinations(started):
    """Builds started MLLP destinations to a loopback port, stopped after the test."""

    def build(port: int, **settings) -> MLLPDestination:
        settings.setdefault("ack_timeout_seconds", 5)
        return started(
            MLLPDestination("lab", MllpSettings(host="127.0.0.1", port=port, **settings), reactor=reactor)
        )

    return build


@defer.inlineCallbacks
def send_all(destination: MLLPDestination, numbers):
    results = []
    for n in numbers:
        results.append((yield destination.send(delivery(n))))
    return results


@pytest_twisted.inlineCallbacks
def test_each_answer_maps_to_its_outcome_over_one_connection(downstream, destinations):
    """AA, AE, AR+207, AR+203, AR, CA, CE, CR in turn give the default outcomes.

    All on one kept-open connection.
    """
    downstream.script(
        reply("AA"),
        reply("AE", 101),
        reply("AR", 207),
        reply("AR", 203),
        reply("AR"),
        reply("CA"),
        reply("CE"),
        reply("CR"),
    )
    destination = destinations(downstream.port)
    results = yield send_all(destination, range(1, 9))
    assert [(r.outcome, r.response_code) for r in results] == [
        (SENT, "AA"),
        (ERROR, "AE"),
        (RETRY, "AR"),
        (ERROR, "AR"),
        (RETRY, "AR"),
        (SENT, "CA"),
        (RETRY, "CE"),
        (ERROR, "CR"),
    ]
    assert [m for m in downstream.received] == [message(n) for n in range(1, 9)]
    assert downstream.connections_opened == 1


@pytest_twisted.inlineCallbacks
def test_no_answer_times_out_drops_the_connection_and_the_next_message_uses_a_new_one(
    downstream, destinations
):
    """Without an ACK in time the attempt is RETRY and the connection is dropped; the next send reconnects."""
    downstream.script(silence, reply("AA"))
    destination = destinations(downstream.port, ack_timeout_seconds=0.3)
    first, second = yield send_all(destination, [1, 2])
    assert first.outcome == RETRY and "no ACK within 0.3s" in first.reason
    assert (second.outcome, second.response_code) == (SENT, "AA")
    assert downstream.connections_opened == 2


@pytest_twisted.inlineCallbacks
def test_a_late_ack_is_not_taken_for_the_next_message(downstream, destinations):
    """An ACK arriving after the timeout goes nowhere.

    The next message gets its own ACK on a new connection.
    """
    downstream.script(after(0.6, reply("AA")), reply("AE"))
    destination = destinations(downstream.port, ack_timeout_seconds=0.3)
    first, second = yield send_all(destination, [1, 2])
    assert first.outcome == RETRY
    assert (second.outcome, second.response_code) == (ERROR, "AE")
    assert b"MSG-2" in second.response


@pytest_twisted.inlineCallbacks
def test_ack_for_another_message_is_retry_and_drops_the_connection(downstream, destinations):
    """MSA-2 not matching the control id sent is RETRY (mismatch), and the connection is not reused."""
    downstream.script(wrong_control_id, reply("AA"))
    destination = destinations(downstream.port)
    first, second = yield send_all(destination, [1, 2])
    assert first.outcome == RETRY and "NOT-MSG-1" in first.reason
    assert second.outcome == SENT
    assert downstream.connections_opened == 2


@pytest_twisted.inlineCallbacks
def test_a_reply_with_nothing_in_flight_closes_the_connection(downstream, destinations):
    """A second, unasked-for reply is not kept for the next message: the connection is closed and reopened."""
    downstream.script(twice, reply("AE"))
    destination = destinations(downstream.port)
    first = yield destination.send(delivery(1))
    yield deferLater(reactor, 0.1, lambda: None)
    second = yield destination.send(delivery(2))
    assert (first.outcome, second.outcome, second.response_code) == (SENT, ERROR, "AE")
    assert downstream.connections_opened == 2


@pytest_twisted.inlineCallbacks
def test_receiver_closing_the_connection_is_retry_and_the_next_send_reconnects(downstream, destinations):
    """A receiver hanging up instead of answering gives RETRY; the next message goes over a new connection."""
    downstream.script(hang_up, reply("AA"))
    destination = destinations(downstream.port)
    first, second = yield send_all(destination, [1, 2])
    assert first.outcome == RETRY and "closed before the ACK" in first.reason
    assert second.outcome == SENT
    assert downstream.connections_opened == 2


@pytest_twisted.inlineCallbacks
def test_receiver_down_is_retry_and_coming_up_later_takes_the_next_message(closed_port, destinations):
    """Connection refused is RETRY (send never errbacks); once the receiver listens, the next send is SENT."""
    port = closed_port
    destination = destinations(port, connect_timeout_seconds=2)
    refused = yield destination.send(delivery(1))
    assert refused.outcome == RETRY and f"127.0.0.1:{port}" in refused.reason
    server = Downstream(f"tcp:{port}:interface=127.0.0.1")
    server.start()
    try:
        sent = yield destination.send(delivery(2))
    finally:
        yield server.stop()
    assert sent.outcome == SENT


@pytest_twisted.inlineCallbacks
def test_connect_timeout_is_retry(unanswered_port, destinations):
    """A connection that cannot be made within connect_timeout_seconds is RETRY.

    With the timeout as reason.
    """
    destination = destinations(unanswered_port, connect_timeout_seconds=0.3)
    result = yield destination.send(delivery(1))
    assert result.outcome == RETRY
    assert f"no connection to 127.0.0.1:{unanswered_port} within 0.3s" in result.reason


@pytest_twisted.inlineCallbacks
def test_keep_alive_false_opens_one_connection_per_message(downstream, destinations):
    """With keep_alive false every message has its own connection."""
    destination = destinations(downstream.port, keep_alive=False)
    results = yield send_all(destination, range(1, 4))
    assert [r.outcome for r in results] == [SENT] * 3
    assert downstream.connections_opened == 3


@pytest_twisted.inlineCallbacks
def test_concurrent_sends_are_served_in_order_one_at_a_time(downstream, destinations):
    """Sends made at once are written one after another, each only after the previous ACK, in call order."""
    downstream.script(*(after(0.05, reply("AA")) for _ in range(5)))
    destination = destinations(downstream.port)
    results = yield defer.gatherResults([destination.send(delivery(n)) for n in range(1, 6)])
    assert [r.outcome for r in results] == [SENT] * 5
    assert [r.response.count(f"MSG-{n}".encode()) for n, r in enumerate(results, start=1)] == [1] * 5
    expected = []
    for n in range(1, 6):
        expected += [f"received MSG-{n}", f"answered MSG-{n}"]
    assert downstream.events == expected
    assert downstream.connections_opened == 1


@pytest_twisted.inlineCallbacks
def test_custom_policy_makes_ae_retry_and_ar_error(downstream, destinations):
    """A destination's ack_policy overrides the defaults: AE to retry, AR (even with 207) to error."""
    downstream.script(reply("AE", 101), reply("AR", 207))
    destination = destinations(downstream.port, ack_policy=AckPolicy(AE="retry", AR="error"))
    ae, ar = yield send_all(destination, [1, 2])
    assert (ae.outcome, ar.outcome) == (RETRY, ERROR)


@pytest_twisted.inlineCallbacks
def test_reply_longer_than_the_limit_is_unreadable_and_drops_the_connection(downstream, destinations):
    """A reply past max_reply_bytes is not buffered: the unreadable case (RETRY), on a dropped connection."""
    downstream.script(raw(b"MSH|" + b"x" * 5000), reply("AA"))
    destination = destinations(downstream.port, max_reply_bytes=1024)
    first, second = yield send_all(destination, [1, 2])
    assert first.outcome == RETRY and "longer than 1024 bytes" in first.reason
    assert second.outcome == SENT
    assert downstream.connections_opened == 2


@pytest_twisted.inlineCallbacks
def test_stop_lets_the_message_in_flight_finish_and_answers_queued_ones_retry(downstream):
    """stop() waits for the ACK in flight, answers sends still queued with RETRY.

    Then closes the connection.
    """
    gate = Gate()
    downstream.script(gate)
    destination = MLLPDestination(
        "lab", MllpSettings(host="127.0.0.1", port=downstream.port), reactor=reactor
    )
    in_flight = destination.send(delivery(1))
    queued = destination.send(delivery(2))
    yield gate.arrived  # message 1 is in flight
    stopping = destination.stop()
    gate.release()
    yield stopping
    assert (yield in_flight).outcome == SENT
    queued_result = yield queued
    assert queued_result.outcome == RETRY and "stopped" in queued_result.reason
    after_stop = yield destination.send(delivery(3))
    assert after_stop.outcome == RETRY
    assert downstream.received == [message(1)]
    for _ in range(50):  # the receiver sees the close shortly after
        if not downstream.factory.connections:
            break
        yield deferLater(reactor, 0.02, lambda: None)
    assert not downstream.factory.connections


@pytest_twisted.inlineCallbacks
def test_a_run_is_sent_in_order_and_stops_at_the_first_failure(downstream, destinations):
    """send_run sends one after another.

    With stop_at_failure nothing goes after the first that is not SENT.
    """
    downstream.script(reply("AA"), reply("AA"), reply("AR", 207), reply("AA"))
    destination = destinations(downstream.port)
    results = yield destination.send_run([delivery(n) for n in range(1, 6)], stop_at_failure=True)
    assert [(r.outcome, r.response_code) for r in results] == [(SENT, "AA"), (SENT, "AA"), (RETRY, "AR")]
    assert downstream.received == [message(n) for n in range(1, 4)]
    rest = yield destination.send_run([delivery(n) for n in range(4, 6)], stop_at_failure=False)
    assert [r.outcome for r in rest] == [SENT, SENT]
    assert downstream.received == [message(n) for n in range(1, 6)]
    assert downstream.connections_opened == 1


@pytest_twisted.inlineCallbacks
def test_stop_ends_a_run_after_the_message_in_flight(downstream):
    """stop() during a run lets the message in flight get its ACK; the rest of the run is not attempted."""
    gate = Gate()
    downstream.script(reply("AA"), gate)
    destination = MLLPDestination(
        "lab", MllpSettings(host="127.0.0.1", port=downstream.port), reactor=reactor
    )
    run = destination.send_run([delivery(n) for n in range(1, 6)], stop_at_failure=True)
    yield gate.arrived  # the second message is in flight
    stopping = destination.stop()
    gate.release()
    yield stopping
    results = yield run
    assert [r.outcome for r in results] == [SENT, SENT]
    assert downstream.received == [message(1), message(2)]
    assert (yield destination.send_run([delivery(6)], stop_at_failure=True)) == []


@pytest_twisted.inlineCallbacks
def test_the_sending_thread_journals_each_message_before_it_goes_and_its_answer_before_the_next(
    downstream, destinations, journals
):
    """While message 2 is in flight the journal on disk holds 1 sent, 1's ACK and 2; at the end 2's ACK."""
    gate = Gate()
    downstream.script(reply("AA"), gate)
    journal = journals.journal("adt", "lab")
    journal.open()
    destination = destinations(downstream.port)
    run = destination.send_run([delivery(1), delivery(2)], stop_at_failure=True, journal=journal)
    yield gate.arrived  # the second message is in flight
    assert [(e[0], e[1]) for e in journal_lines(journal.path)] == [("S", 1), ("A", 1), ("S", 2)]
    gate.release()
    results = yield run
    assert [r.outcome for r in results] == [SENT, SENT]
    entries = journal_lines(journal.path)
    assert [(e[0], e[1]) for e in entries] == [("S", 1), ("A", 1), ("S", 2), ("A", 2)]
    assert entries[-1][3:6] == ["SENT", base64.b64encode(results[1].response).decode(), "AA"]
    journal.close()


@pytest.fixture
def tls_downstream(tmp_path):
    cert_file, key_file = self_signed(tmp_path, dns_names=("localhost",), ips=("127.0.0.1",))
    server = Downstream(f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}")
    server.start()
    yield server, cert_file
    pytest_twisted.blockon(server.stop())


@pytest_twisted.inlineCallbacks
def test_tls_with_the_receivers_ca_is_sent(tls_downstream, destinations):
    """Over TLS, trusting the receiver's certificate through tls.ca_file, messages are sent and ACKs read."""
    server, cert_file = tls_downstream
    destination = destinations(server.port, tls=TlsSettings(ca_file=cert_file))
    results = yield send_all(destination, [1, 2])
    assert [r.outcome for r in results] == [SENT, SENT]
    assert server.connections_opened == 1


@pytest_twisted.inlineCallbacks
def test_tls_with_an_untrusted_certificate_is_retry(tls_downstream, destinations, tmp_path):
    """A receiver whose certificate is not signed by the trusted CA is never sent to: RETRY."""
    server, _ = tls_downstream
    other_ca, _ = self_signed(tmp_path, stem="other")
    destination = destinations(server.port, tls=TlsSettings(ca_file=other_ca))
    result = yield destination.send(delivery(1))
    assert result.outcome == RETRY
    assert server.received == []


@pytest_twisted.inlineCallbacks
def test_tls_hostname_must_match_unless_verify_hostname_is_off(tmp_path, destinations):
    """A trusted certificate for another name is refused, unless verify_hostname is false."""
    cert_file, key_file = self_signed(tmp_path, dns_names=("lab.example",), ips=())
    server = Downstream(f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}")
    port = server.start()
    try:
        checked = destinations(port, tls=TlsSettings(ca_file=cert_file))
        unchecked = destinations(port, tls=TlsSettings(ca_file=cert_file, verify_hostname=False))
        refused = yield checked.send(delivery(1))
        sent = yield unchecked.send(delivery(2))
    finally:
        yield server.stop()
    assert (refused.outcome, sent.outcome) == (RETRY, SENT)


@pytest_twisted.inlineCallbacks
def test_mutual_tls_presents_the_client_certificate(tmp_path, destinations):
    """With cert_file/key_file the destination presents its certificate to a receiver that requires one."""
    server_cert, server_key = self_signed(tmp_path, stem="server")
    client_cert, client_key = self_signed(tmp_path, dns_names=("hub",), ips=(), stem="client")
    identity = ssl.PrivateCertificate.loadPEM(server_cert.read_bytes() + server_key.read_bytes())
    requiring = identity.options(
        ssl.Certificate.loadPEM(client_cert.read_bytes())
    )  # verify=True, requireCertificate
    server = Downstream()
    port = yield server.listen(SSL4ServerEndpoint(reactor, 0, requiring, interface="127.0.0.1"))
    try:
        anonymous = destinations(port, tls=TlsSettings(ca_file=server_cert))
        identified = destinations(
            port, tls=TlsSettings(ca_file=server_cert, cert_file=client_cert, key_file=client_key)
        )
        refused = yield anonymous.send(delivery(1))
        sent = yield identified.send(delivery(2))
    finally:
        yield server.stop()
    assert (refused.outcome, sent.outcome) == (RETRY, SENT)
    assert server.received == [message(2)]
