"""Channels end to end over loopback: real engine, real downstream MLLP servers, the real database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engine.channels import channel as channel_module
from engine.config import parse_config
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.model import NewMessage, Status
from engine.store.message_store import MessageStore
from engine.store.reads import MessageQuery
from tests.fakes.corpus import CORPUS_DIR
from tests.fakes.downstream import Downstream, reply, silence
from tests.fakes.harness import free_port, in_thread, start_engine, statuses, wait_until

ADT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A04|20260101120000\r"
    "PID|1||{n}^^^PMS^MR||DOE^JOHN||19800101|M|||1 MAIN ST^^TOWN^ST^12345\r"
    "PV1|1|O|4N^101^A\r"
)


def adt(n: int, cid: str | None = None) -> bytes:
    return ADT.format(cid=cid or f"C{n:04d}", n=n).encode()


def config_for(tmp_path: Path, channels: str, *, tables: str = "", extra_listeners: str = ""):
    text = f"""
engine:
  application: HUB
  facility: TEST
  data_dir: data
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
{extra_listeners}
channels:
{channels}
{tables}
"""
    (tmp_path / "channels.yaml").write_text(text)
    return parse_config(text, source=str(tmp_path / "channels.yaml"), base_dir=tmp_path)


FAST_QUEUE = """
        queue:
          retry_initial_seconds: 0.05
          retry_max_seconds: 0.2
          retry_jitter: 0
          max_attempts: 1000
"""


def mllp_channel(port: int, *, respond: str = "after_store", extra: str = "", queue: str = FAST_QUEUE) -> str:
    return f"""
  - name: to-emr
    source: main
    respond: {respond}
    respond_timeout_seconds: 5
    accept: {{types: ["*"]}}
{extra}
    destinations:
      - name: emr
        type: mllp
        host: 127.0.0.1
        port: {port}
        ack_timeout_seconds: 2
        connect_timeout_seconds: 2
{queue}
"""


def send(port: int, payloads: list[bytes]) -> list:
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        return [parse_reply(client.request(p)) for p in payloads]


@pytest_twisted.inlineCallbacks
def test_downstream_down_then_up_then_ae_then_ar(tmp_path):
    """Messages wait while the partner is down, arrive in order once it is up.

    AE is an error, AR 207 retried, AR 203 an error.
    """
    port = free_port()
    engine = start_engine(config_for(tmp_path, mllp_channel(port)))
    downstream = Downstream(f"tcp:{port}:interface=127.0.0.1")
    try:
        replies = yield in_thread(send, engine.listeners["main"].port, [adt(n) for n in range(1, 6)])
        assert [r.code for r in replies] == ["AA"] * 5
        yield deferLater(reactor, 0.3, lambda: None)  # a few failed attempts while nobody listens
        queued = yield statuses(engine)
        assert set(queued.values()) == {"QUEUED"}
        downstream.start()
        yield wait_until(lambda: len(downstream.received) >= 5)
        assert [p.split(b"|")[9] for p in downstream.received] == [b"C%04d" % n for n in range(1, 6)]

        downstream.script(
            reply("AE", 101), reply("AA"), reply("AR", 207), reply("AA"), reply("AR", 203), reply("AA")
        )
        yield in_thread(send, engine.listeners["main"].port, [adt(n) for n in range(6, 11)])
        yield wait_until(
            lambda: statuses(engine).addCallback(
                lambda s: all(v in ("SENT", "ERROR") for v in s.values()) and len(s) == 10
            )
        )
        final = yield statuses(engine)
        assert final == {
            **{f"C{n:04d}": "SENT" for n in range(1, 6)},
            "C0006": "ERROR",  # AE: resending unchanged would fail again
            "C0007": "SENT",
            "C0008": "SENT",  # AR 207: retried, then AA
            "C0009": "ERROR",  # AR 203: unsupported version, an error
            "C0010": "SENT",
        }
        order = [p.split(b"|")[9].decode() for p in downstream.received]
        assert order == [f"C{n:04d}" for n in range(1, 6)] + [
            "C0006",
            "C0007",
            "C0008",
            "C0008",
            "C0009",
            "C0010",
        ]
        stored = yield engine.store.search(MessageQuery(control_id="C0006"))
        message = yield engine.store.get(stored[0].id)
        assert [(d.destination, d.status, d.response_code) for d in message.deliveries] == [
            ("emr", "ERROR", "AE")
        ]
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_restart_in_the_middle_of_a_backlog_delivers_everything_in_order(tmp_path):
    """Queued messages survive an engine restart and are delivered in order of receipt afterwards."""
    port = free_port()
    config = config_for(tmp_path, mllp_channel(port))
    engine = start_engine(config)
    replies = yield in_thread(send, engine.listeners["main"].port, [adt(n) for n in range(1, 31)])
    assert all(r.code == "AA" for r in replies)
    yield engine.stopService()
    yield _restart_and_deliver_in_order(config, port, [], 30)


@defer.inlineCallbacks
def _restart_and_deliver_in_order(config, port: int, new_payloads: list[bytes], total: int):
    """Start the engine with its downstream up and send it ``new_payloads``.

    C0001 to C<total> arrive downstream in order, all SENT.
    """
    downstream = Downstream(f"tcp:{port}:interface=127.0.0.1")
    downstream.start()
    engine = start_engine(config)
    try:
        if new_payloads:
            replies = yield in_thread(send, engine.listeners["main"].port, new_payloads)
            assert all(r.code == "AA" for r in replies)
        yield wait_until(lambda: len(downstream.received) >= total)
        assert [p.split(b"|")[9] for p in downstream.received] == [b"C%04d" % n for n in range(1, total + 1)]
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: set(s.values()) == {"SENT"}))
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_messages_left_received_go_out_before_new_ones_after_a_restart(tmp_path):
    """Messages a crash left RECEIVED (not processed) are delivered before those received after the restart.

    New ones wait for the runner's pass.
    """
    port = free_port()
    config = config_for(tmp_path, mllp_channel(port))
    store = MessageStore(config.store_url, reactor=reactor)
    store.start()
    at = datetime.now(UTC)
    left = [
        NewMessage(
            raw=adt(n),
            received_at=at,
            listener="main",
            peer="before",
            status=Status.RECEIVED,
            channel="to-emr",
            control_id=f"C{n:04d}",
        )
        for n in range(1, 21)
    ]
    yield store.add(left)
    yield store.stop()
    yield _restart_and_deliver_in_order(config, port, [adt(n) for n in range(21, 41)], 40)


TWO_DESTINATIONS = """
  - name: adt-out
    source: main
    accept: {types: ["ADT"]}
    transforms:  # after the filters, whatever the order here
      - set: {field: MSH-5, value: EMR}
      - map: {field: PV1-3.1, table: wards, on_miss: error}
    filters:
      - {field: PID-8, in: [M, F]}
    destinations:
      - name: archive
        type: file
        directory: archive
        filename: "{control_id}.hl7"
      - name: billing
        type: file
        directory: billing
        filename: "{control_id}.hl7"
        filters:
          - {field: PV1-2, in: [I]}
"""


@defer.inlineCallbacks
def _processing_trails(engine, folder: Path) -> defer.Deferred:
    """Per control id: what processing and delivery left of the message.

    Without ids, times and the engine's folder.
    """
    trails = {}
    for summary in (yield engine.store.search(MessageQuery(limit=100))):
        message = yield engine.store.get(summary.id)
        deliveries = [
            (d.destination, d.status, d.attempts, d.reason.replace(str(folder), ""))
            for d in message.deliveries
        ]
        # Sorted: the two destinations' dispatchers record their attempts in either order.
        events = sorted(
            (e.status, e.detail.replace(str(folder), ""), e.destination or "") for e in message.events
        )
        trails[summary.control_id] = (message.status, message.error, message.transformed, deliveries, events)
    return trails


@pytest_twisted.inlineCallbacks
def test_processing_at_intake_leaves_what_a_pass_leaves(tmp_path, monkeypatch):
    """The same messages through the same channel leave the same statuses, content, deliveries and events.

    Processed at intake or by the runner's pass.
    """
    tables = """
tables:
  wards: {inline: {"4N": "NORTH-4"}}
"""
    inpatient = adt(2).replace(b"PV1|1|O|", b"PV1|1|I|")
    payloads = [
        adt(1),
        inpatient,
        adt(3).replace(b"|19800101|M|", b"|19800101|U|"),
        adt(4).replace(b"PV1|1|O|4N", b"PV1|1|O|7W"),
    ]
    trails = []
    for way in ("at intake", "by a pass"):
        if way == "by a pass":
            monkeypatch.setattr(channel_module, "may_process_at_intake", lambda config: False)
        folder = tmp_path / way.replace(" ", "-")
        folder.mkdir()
        engine = start_engine(config_for(folder, TWO_DESTINATIONS, tables=tables))
        try:
            replies = yield in_thread(send, engine.listeners["main"].port, payloads)
            assert [r.code for r in replies] == ["AA"] * 4
            final = {"C0001": "SENT", "C0002": "SENT", "C0003": "FILTERED", "C0004": "ERROR"}
            yield wait_until(
                lambda engine=engine, final=final: statuses(engine).addCallback(lambda s: s == final)
            )
            trails.append((yield _processing_trails(engine, folder)))
            assert sorted(p.name for p in (folder / "billing").iterdir()) == ["C0002.hl7"]
        finally:
            yield engine.stopService()
    assert trails[0] == trails[1]
    assert [e[0] for e in trails[0]["C0002"][4]] == ["QUEUED", "QUEUED", "QUEUED", "SENT", "SENT", "SENT"]


@pytest_twisted.inlineCallbacks
def test_filters_transforms_and_lookup_tables_reach_a_file(tmp_path):
    """Channel filters drop what they should (FILTERED with the reason).

    Transforms and a lookup table shape what is written.
    """
    channels = """
  - name: adt-to-file
    source: main
    accept: {types: ["ADT"]}
    filters:
      - {field: PID-8, in: [M, F]}
    transforms:
      - set: {field: MSH-5, value: EMR}
      - map: {field: PV1-3.1, table: wards, on_miss: default, default: UNKNOWN}
      - case: {field: PID-5.1, to: lower}
    destinations:
      - name: archive
        type: file
        directory: out
        filename: "{control_id}.hl7"
        transforms:
          - set: {field: MSH-6, value: ARCHIVE}
"""
    tables = """
tables:
  wards: {inline: {"4N": "NORTH-4"}}
"""
    engine = start_engine(config_for(tmp_path, channels, tables=tables))
    try:
        unknown_sex = adt(2).replace(b"|19800101|M|", b"|19800101|U|")
        replies = yield in_thread(send, engine.listeners["main"].port, [adt(1), unknown_sex])
        assert [r.code for r in replies] == ["AA", "AA"]
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "SENT", "C0002": "FILTERED"})
        )
        written = (tmp_path / "out" / "C0001.hl7").read_bytes().split(b"\r")
        assert written[0].split(b"|")[4:6] == [b"EMR", b"ARCHIVE"]
        assert b"|4N^" not in written[3] and written[3].startswith(b"PV1|1|O|NORTH-4^101^A")
        assert b"|doe^JOHN|" in written[2]
        filtered = yield engine.store.search(MessageQuery(control_id="C0002"))
        assert "PID-8" in filtered[0].error
        stored = yield engine.store.get((yield engine.store.search(MessageQuery(control_id="C0001")))[0].id)
        assert stored.raw == adt(1)  # the raw message is kept as received
        assert b"NORTH-4" in stored.transformed
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_after_processing_relays_the_downstream_answer(tmp_path):
    """With respond: after_processing the sender hears what the partner said, and that answer is stored.

    AA when it took it, AE when it refused the content.
    """
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(config_for(tmp_path, mllp_channel(port, respond="after_processing")))
    try:
        downstream.script(reply("AA"), reply("AE", 102))
        replies = yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(2)])
        assert [(r.code, r.control_id) for r in replies] == [("AA", "C0001"), ("AE", "C0002")]
        assert "ERR" in replies[1].text
        # The answers given are stored with their messages, as after_store's are.
        for answered in replies:
            [summary] = yield engine.store.search(MessageQuery(control_id=answered.control_id))
            stored = yield engine.store.get(summary.id)
            assert (summary.ack_code, stored.ack.decode()) == (answered.code, answered.text)
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_duplicates_are_answered_with_the_original_ack_and_not_processed_again(tmp_path):
    """The same sender and control id within the window gets the original ACK, is kept as FILTERED.

    And is not sent on.
    """
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(
        config_for(tmp_path, mllp_channel(port, extra="    duplicate_window_seconds: 3600"))
    )
    try:
        first, second, other = yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(1), adt(2)])
        assert first.code == second.code == other.code == "AA"
        assert second.text == first.text  # byte for byte the original ACK
        yield wait_until(lambda: len(downstream.received) >= 2)
        yield deferLater(reactor, 0.3, lambda: None)
        assert [p.split(b"|")[9] for p in downstream.received] == [b"C0001", b"C0002"]
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        assert sorted(r.status for r in rows) == ["FILTERED", "SENT"]
        assert any("duplicate of message" in r.error for r in rows)
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_channel_destination_hands_messages_to_another_channel(tmp_path):
    """A `channel` destination stores the message for the target channel.

    Which sends it on with its own transforms.
    """
    channels = """
  - name: intake
    source: main
    accept: {types: ["*"]}
    destinations:
      - {name: to-router, type: channel, channel: router}
  - name: router
    source: main
    accept: {types: ["ZZZ"]}
    transforms:
      - set: {field: MSH-3, value: ROUTER}
    destinations:
      - {name: archive, type: file, directory: routed, filename: "{control_id}.hl7"}
"""
    engine = start_engine(config_for(tmp_path, channels))
    try:
        yield in_thread(send, engine.listeners["main"].port, [adt(1)])
        yield wait_until(lambda: (tmp_path / "routed" / "C0001.hl7").exists())
        assert (tmp_path / "routed" / "C0001.hl7").read_bytes().split(b"|")[2] == b"ROUTER"
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        assert sorted((r.channel, r.listener) for r in rows) == [
            ("intake", "main"),
            ("router", "channel:intake"),
        ]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_file_source_stores_each_file_and_moves_it(tmp_path):
    """Files are stored (a batch file split into its messages), moved to done, a bad one to error.

    After a restart, a file dropped again under a name already read is a resend: stored again.
    """
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    extra = """
  - name: drop
    type: file
    directory: inbox
    poll_seconds: 0.1
    min_age_seconds: 0
"""
    channels = """
  - name: from-files
    source: drop
    accept: {types: ["*"]}
"""
    config = config_for(tmp_path, channels, extra_listeners=extra)
    (inbox / "a.hl7").write_bytes((CORPUS_DIR / "batch" / "pyhl7_sample_file1.hl7").read_bytes())
    (inbox / "b.hl7").write_bytes(adt(7))
    (inbox / "c.hl7").write_bytes(b"this is not HL7\r")
    engine = start_engine(config)
    try:
        yield wait_until(lambda: not list(inbox.glob("*.hl7")))
        assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.hl7", "b.hl7"]
        assert [p.name for p in (inbox / "error").iterdir()] == ["c.hl7"]
        count = yield engine.store.count(MessageQuery(listener="drop"))
        assert count == 5  # three messages of the batch file, one message, one rejected file
    finally:
        yield engine.stopService()
    # The same file again is a resend, not a file a crash left unmoved (tests/listeners/test_file.py).
    (inbox / "b.hl7").write_bytes(adt(7))
    engine = start_engine(config)
    try:
        yield wait_until(lambda: not list(inbox.glob("*.hl7")))
        count = yield engine.store.count(MessageQuery(listener="drop"))
        assert count == 6
        assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.hl7", "b.hl7", "b.hl7.1"]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_reload_adds_a_channel_without_dropping_connections_and_keeps_history(tmp_path):
    """A reload that only changes channels keeps the listener's open connections.

    Each applied config is recorded.
    """
    downstream = Downstream()
    port = downstream.start()
    config = config_for(
        tmp_path,
        """
  - name: adt
    source: main
    accept: {types: ["ADT"]}
""",
    )
    engine = start_engine(config)
    try:
        listener_port = engine.listeners["main"].port
        client = MLLPClient("127.0.0.1", listener_port, timeout=10)
        try:
            before = yield in_thread(
                lambda: parse_reply(client.request(adt(1).replace(b"ADT^A04^ADT_A01", b"ORU^R01^ORU_R01")))
            )
            assert before.code == "AR"  # no channel takes ORU yet
            new = config_for(
                tmp_path,
                """
  - name: adt
    source: main
    accept: {types: ["ADT"]}
"""
                + mllp_channel(port).replace("to-emr", "oru").replace('types: ["*"]', 'types: ["ORU"]'),
            )
            report = yield engine.reload(new)
            assert "channel oru added" in str(report)
            after = yield in_thread(
                lambda: parse_reply(client.request(adt(2).replace(b"ADT^A04^ADT_A01", b"ORU^R01^ORU_R01")))
            )
            assert after.code == "AA"  # same connection, new channel
        finally:
            client.close()
        yield wait_until(lambda: len(downstream.received) == 1)
        history = yield engine.store.config_history()
        assert [h.changes for h in history][:2] == ["channel oru added", "engine started"]
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_resend_queues_a_message_again(tmp_path):
    """An operator's resend sends the stored message to the destination again."""
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(config_for(tmp_path, mllp_channel(port)))
    try:
        yield in_thread(send, engine.listeners["main"].port, [adt(1)])
        yield wait_until(lambda: len(downstream.received) == 1)
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "SENT"}))
        yield engine.store.resend([rows[0].id])
        yield wait_until(lambda: len(downstream.received) == 2, seconds=15)
        assert downstream.received[0] == downstream.received[1]
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_block_keeps_order_behind_a_silent_partner(tmp_path):
    """on_error: block holds later messages while the head waits for its ACK to time out and be retried."""
    downstream = Downstream()
    port = downstream.start()
    engine = start_engine(
        config_for(tmp_path, mllp_channel(port).replace("ack_timeout_seconds: 2", "ack_timeout_seconds: 0.3"))
    )
    try:
        downstream.script(silence)
        yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(2)])
        yield wait_until(lambda: len(downstream.received) >= 3)
        assert [p.split(b"|")[9] for p in downstream.received[:3]] == [b"C0001", b"C0001", b"C0002"]
    finally:
        yield engine.stopService()
        yield downstream.stop()


# Retries and errors through the whole engine


@pytest_twisted.inlineCallbacks
def test_a_partner_that_stays_down_ends_in_error_after_max_attempts(tmp_path):
    """With max_attempts 3 and nobody listening the delivery ends in ERROR, having given up after 3."""
    queue = """
        queue:
          retry_initial_seconds: 0.02
          retry_jitter: 0
          max_attempts: 3
"""
    engine = start_engine(config_for(tmp_path, mllp_channel(free_port(), queue=queue)))
    try:
        yield in_thread(send, engine.listeners["main"].port, [adt(1)])
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR"}))
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        message = yield engine.store.get(rows[0].id)
        assert message.deliveries[0].attempts == 3
        assert "gave up after 3 attempt(s)" in message.deliveries[0].reason
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_skip_lets_later_messages_pass_a_failing_one(tmp_path):
    """on_error: skip sends the next message while the failed one waits for its retry."""
    downstream = Downstream()
    port = downstream.start()
    queue = """
        queue:
          on_error: skip
          retry_initial_seconds: 0.5
          retry_jitter: 0
"""
    engine = start_engine(config_for(tmp_path, mllp_channel(port, queue=queue)))
    try:
        downstream.script(reply("AR", 207), reply("AA"), reply("AA"))
        yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(2)])
        yield wait_until(lambda: len(downstream.received) >= 3)
        assert [p.split(b"|")[9] for p in downstream.received[:3]] == [b"C0001", b"C0002", b"C0001"]
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "SENT", "C0002": "SENT"})
        )
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_a_transform_error_puts_the_message_in_error_and_the_channel_goes_on(tmp_path):
    """A failing transform sends that message to ERROR with the transform's path.

    The next message is processed.
    """
    channels = """
  - name: strict
    source: main
    accept: {types: ["*"]}
    transforms:
      - map: {field: PV1-3.1, table: wards, on_miss: error}
"""
    tables = """
tables:
  wards: {inline: {"4N": "NORTH-4"}}
"""
    engine = start_engine(config_for(tmp_path, channels, tables=tables))
    try:
        unknown_ward = adt(1).replace(b"PV1|1|O|4N", b"PV1|1|O|7W")
        replies = yield in_thread(send, engine.listeners["main"].port, [unknown_ward, adt(2)])
        assert [r.code for r in replies] == ["AA", "AA"]  # after_store: the sender only learns it was stored
        yield wait_until(
            lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR", "C0002": "TRANSFORMED"})
        )
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        assert "channels[0].transforms[0]" in rows[0].error and "7W" in rows[0].error
        yield deferLater(reactor, 0, lambda: None)
    finally:
        yield engine.stopService()
