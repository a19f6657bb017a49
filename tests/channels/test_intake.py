"""The intake end to end over loopback (corpus, store-then-ACK, store failures, batches), and its channels."""

from __future__ import annotations

import re
import sqlite3

import pytest
import pytest_twisted

from engine.channels.channel import Channel
from engine.channels.dispatcher import RetryPolicy
from engine.channels.intake import Intake
from engine.channels.pipeline import DestinationStages, Pipeline
from engine.channels.spec import ChannelConfig
from engine.config import EngineSettings, ListenerConfig
from engine.errors import HL7Error
from engine.hl7.ack import parse_reply
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.listeners.client import MLLPClient, ReplyTimeout, control_id_of
from engine.store.reads import MessageQuery
from tests.fakes.channels import FakeStore, ScriptedDestination
from tests.fakes.corpus import CORPUS_DIR, corpus_entries
from tests.fakes.harness import in_thread, make_config, port_of, start_engine
from tests.fakes.reactor import InlineThreads

PROBE = (
    b"MSH|^~\\&|PROBE|CLINIC|HUB|TEST|20260101120000||ADT^A08^ADT_A01|PROBE-%d|P|2.5.1\r"
    b"EVN|A08|20260101120000\rPID|1||P%d^^^PMS^MR||DOE^JOHN\r"
)

NEGATIVE = ("AR", "AE", "CR", "CE")
POSITIVE = ("AA", "CA")


def segments(text: str) -> list[str]:
    return [s for s in re.split(r"\r\n|\n|\r", text) if s]


def msa_codes(text: str) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of every MSA segment in a reply (a single ACK or a batch of them)."""
    result = []
    for segment in segments(text):
        if segment.startswith("MSA"):
            fields = segment.split(segment[3])
            result.append((fields[1], fields[2] if len(fields) > 2 else ""))
    return result


def messages_in(data: bytes) -> int:
    return sum(1 for s in re.split(rb"\r\n|\n|\r", data) if s.startswith(b"MSH"))


def exchange(port: int, payload: bytes, n: int) -> tuple[list[str], str]:
    """Send the payload then a probe on one connection.

    Return the replies before the probe's, and the probe's.
    """
    with MLLPClient("127.0.0.1", port, timeout=10) as client:
        client.send(payload)
        client.send(PROBE % (n, n))
        replies = []
        while True:
            text = client.receive().decode("utf-8", errors="replace")
            if f"PROBE-{n}" in [code[1] for code in msa_codes(text)]:
                return replies, text
            replies.append(text)


@pytest.fixture
def engine_config(tmp_path):
    return make_config(tmp_path)


@pytest_twisted.inlineCallbacks
def test_every_corpus_message_gets_the_answer_its_manifest_expects(engine_config):
    """Each corpus file, sent as one frame, gets exactly the answer MANIFEST.tsv's expect column gives.

    And the connection goes on.
    """
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        failures = []
        for n, entry in enumerate(corpus_entries()):
            data = entry.path.read_bytes()
            replies, probe = yield in_thread(exchange, port, data, n)
            problem = judge(entry, data, replies)
            if problem:
                failures.append(f"{entry.file} (expect {entry.expect}): {problem}")
            if msa_codes(probe)[0][0] not in POSITIVE:
                failures.append(f"{entry.file}: the probe after it was not accepted: {probe!r}")
        assert failures == [], "\n".join(failures)
        stored = yield engine.store.count(MessageQuery(limit=100000))
        assert stored >= len(corpus_entries())
    finally:
        yield engine.stopService()


def judge(entry, data: bytes, replies: list[str]) -> str | None:
    """Why the replies do not fit the entry's expectation, or None when they do."""
    if entry.expect == "AA":
        if len(replies) != 1:
            return f"{len(replies)} replies"
        codes = msa_codes(replies[0])
        if len(codes) != 1 or codes[0][0] not in POSITIVE:
            return f"not accepted: {replies[0]!r}"
        if codes[0][1] != control_id_of(data.lstrip(b"\xef\xbb\xbf")):
            return f"MSA-2 {codes[0][1]!r} does not echo MSH-10"
        return None
    if entry.expect == "AR":
        if len(replies) != 1:
            return f"{len(replies)} replies"
        codes = msa_codes(replies[0])
        if len(codes) != 1 or codes[0][0] not in NEGATIVE:
            return f"not rejected: {replies[0]!r}"
        if not any(s.startswith("ERR") for s in segments(replies[0])):
            return "negative ACK without ERR"
        return None
    if entry.expect == "batch":
        if len(replies) != 1:
            return f"{len(replies)} replies"
        codes = msa_codes(replies[0])
        if not segments(replies[0])[0].startswith(("BHS", "FHS")):
            return f"not a batch acknowledgement: {replies[0]!r}"
        if len(codes) != messages_in(data) or any(code not in POSITIVE for code, _ in codes):
            return f"{len(codes)} ACKs for {messages_in(data)} messages: {codes}"
        return None
    # expect == "any": exactly one answer, except that an ACK is never acknowledged.
    if entry.message_type.startswith("ACK"):
        # A readable ACK is never acknowledged; one whose MSH cannot be read gets its AR.
        try:
            read_header(decode(data).text)
        except HL7Error:
            readable = False
        else:
            readable = True
        if readable:
            return None if not replies else f"an ACK was acknowledged: {replies!r}"
        if len(replies) == 1 and msa_codes(replies[0])[0][0] in NEGATIVE:
            return None
        return f"an unreadable ACK got {replies!r}"
    if len(replies) != 1:
        return f"{len(replies)} replies"
    codes = msa_codes(replies[0])
    if len(codes) != 1:
        return f"unreadable answer {replies[0]!r}"
    if codes[0][0] in NEGATIVE and not any(s.startswith("ERR") for s in segments(replies[0])):
        return "negative ACK without ERR"
    return None


@pytest_twisted.inlineCallbacks
def test_a_positive_ack_is_sent_only_after_the_message_is_committed(engine_config):
    """When the AA arrives, the message is already readable from an independent database connection."""
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        db_path = engine_config.store_url.removeprefix("sqlite:///")

        def send_and_look():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                reply = parse_reply(client.request(PROBE % (1, 1)))
            with sqlite3.connect(db_path) as conn:
                rows = conn.execute(
                    "select status, ack_code, raw from messages where control_id = 'PROBE-1'"
                ).fetchall()
            return reply, rows

        reply, rows = yield in_thread(send_and_look)
        assert reply.code == "AA" and reply.control_id == "PROBE-1"
        assert rows == [("TRANSFORMED", "AA", PROBE % (1, 1))]  # a store-only channel: final once stored
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_store_failure_is_answered_ar_207_or_206_never_aa(tmp_path):
    """While the database is locked by someone else the sender gets AR with ERR 206; once free, AA again."""
    config = make_config(tmp_path, lock_timeout=0.2)
    engine = start_engine(config)
    try:
        port = port_of(engine)
        db_path = config.store_url.removeprefix("sqlite:///")

        def locked_then_free():
            blocker = sqlite3.connect(db_path, isolation_level=None, timeout=5)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                with MLLPClient("127.0.0.1", port, timeout=10) as client:
                    during = client.request(PROBE % (2, 2)).decode()
                    enhanced = client.request(
                        (PROBE % (3, 3)).replace(b"|P|2.5.1", b"|P|2.5.1|||AL|NE")
                    ).decode()
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                after = client.request(PROBE % (4, 4)).decode()
            return during, enhanced, after

        during, enhanced, after = yield in_thread(locked_then_free)
        assert msa_codes(during) == [("AR", "PROBE-2")]
        err = [s for s in segments(during) if s.startswith("ERR")]
        assert len(err) == 1 and err[0].split("|")[3].startswith("206^")
        assert msa_codes(enhanced) == [("CE", "PROBE-3")]
        assert msa_codes(after) == [("AA", "PROBE-4")]
        stored = yield engine.store.search(MessageQuery(control_id="PROBE-2"))
        assert stored == []  # nothing was acknowledged positively, and nothing half-written
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_rejected_messages_are_stored_with_their_reason(engine_config):
    """A message with an unsupported version is answered AR 203 and kept as REJECTED with the reason."""
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        bad = (PROBE % (5, 5)).replace(b"|2.5.1", b"|9.9")

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                return client.request(bad).decode()

        reply = yield in_thread(send)
        assert msa_codes(reply) == [("AR", "PROBE-5")]
        err = [s for s in segments(reply) if s.startswith("ERR")]
        assert err and err[0].split("|")[2] == "MSH^1^12^1^1" and err[0].split("|")[3].startswith("203^")
        rows = yield engine.store.search(MessageQuery(control_id="PROBE-5"))
        assert [(r.status, r.ack_code) for r in rows] == [("REJECTED", "AR")]
        assert "203" in rows[0].error
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_oversize_frame_gets_a_nak_and_the_connection_closes(tmp_path):
    """A frame over max_frame_bytes is answered AR (ERR 207, MSA-2 from its header) and closed."""
    engine = start_engine(make_config(tmp_path, max_frame_bytes=2048))
    try:
        port = port_of(engine)
        huge = PROBE % (6, 6) + b"NTE|1||" + b"x" * 10_000 + b"\r"

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                reply = client.request(huge).decode()
                try:
                    client.receive(timeout=2)
                except ConnectionError:
                    return reply, "closed"
                except ReplyTimeout:
                    return reply, "open"
                return reply, "second reply"

        reply, state = yield in_thread(send)
        assert msa_codes(reply) == [("AR", "PROBE-6")]
        assert state == "closed"
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_enhanced_mode_honours_msh15_when_configured(tmp_path):
    """With honour_accept_ack_type, MSH-15 NE gets no answer, ER answers only errors, AL always."""
    engine = start_engine(make_config(tmp_path, honour=True))
    try:
        port = port_of(engine)

        def enhanced(n: int, msh15: str, version: bytes = b"2.5.1") -> bytes:
            return (PROBE % (n, n)).replace(b"|P|2.5.1", b"|P|" + version + b"|||" + msh15.encode() + b"|NE")

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                client.send(enhanced(7, "NE"))  # stored, no answer
                client.send(enhanced(8, "ER"))  # accepted: no answer
                client.send(enhanced(9, "ER", b"9.9"))  # rejected: answered CR
                client.send(enhanced(10, "AL"))
                return [client.receive().decode(), client.receive().decode()]

        replies = yield in_thread(send)
        assert [msa_codes(r) for r in replies] == [[("CR", "PROBE-9")], [("CA", "PROBE-10")]]
        rows = yield engine.store.search(MessageQuery(limit=100))
        assert sorted(r.control_id for r in rows if r.status != "REJECTED") == [
            "PROBE-10",
            "PROBE-7",
            "PROBE-8",
        ]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_each_batch_member_is_found_by_its_patient_id(engine_config):
    """Intake records PID-3.1 of every message, batch members included.

    So a search by patient id finds them.
    """
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        members = [
            b"MSH|^~\\&|PMS|NORTH|EMR|SOUTH|20260101||ADT^A04|PAT-%d|P|2.5.1\rPID|1||MRN%d^^^NORTH^MR||DOE^JANE"
            % (n, n % 2)
            for n in range(4)
        ]
        data = b"BHS|^~\\&|PMS|NORTH\r" + b"\r".join(members) + b"\rBTS|4"

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                return client.request(data).decode()

        reply = yield in_thread(send)
        assert [code for code, _ in msa_codes(reply)] == ["AA"] * 4
        found = yield engine.store.search(MessageQuery(patient_id="MRN1"))
        assert sorted(r.control_id for r in found) == ["PAT-1", "PAT-3"]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_batch_members_are_stored_one_by_one_with_one_ack_each(engine_config):
    """A BHS..BTS frame is split: each message is stored on its own and acknowledged in one batch ACK."""
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        data = (CORPUS_DIR / "batch" / "pyhl7_sample_file1.hl7").read_bytes()

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                return client.request(data).decode()

        reply = yield in_thread(send)
        members = [control_id_of(m) for m in re.split(rb"(?=MSH\|)", data) if m.startswith(b"MSH")]
        assert [c for _, c in msa_codes(reply)] == members
        assert segments(reply)[0].startswith("FHS") and segments(reply)[-1].startswith("FTS")
        rows = yield engine.store.search(MessageQuery(limit=100))
        assert sorted(r.control_id for r in rows) == sorted(members)
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_store_down_is_answered_ar_207(engine_config):
    """When the store is not running at all (not merely locked) the sender gets AR with ERR 207.

    And CE in enhanced mode.
    """
    engine = start_engine(engine_config)
    try:
        port = port_of(engine)
        yield engine.store.stop()

        def send():
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                return (
                    client.request(PROBE % (11, 11)).decode(),
                    client.request((PROBE % (12, 12)).replace(b"|P|2.5.1", b"|P|2.5.1|||AL|AL")).decode(),
                )

        original, enhanced = yield in_thread(send)
        assert msa_codes(original) == [("AR", "PROBE-11")]
        assert [s for s in segments(original) if s.startswith("ERR")][0].split("|")[3].startswith("207^")
        assert msa_codes(enhanced) == [("CE", "PROBE-12")]
    finally:
        yield engine.stopService()


# The intake and its channels (a fake store on a task.Clock)


def _intake_with_channel(
    store: FakeStore, reactor: InlineThreads, journals
) -> tuple[Intake, Channel, ScriptedDestination]:
    """An intake whose one channel (adt, taking everything) sends to a scripted destination ``out``."""
    config = ChannelConfig(
        name="adt",
        source="main",
        accept={"types": ["*"]},
        destinations=[{"name": "out", "type": "file", "directory": "out"}],
    )
    out = ScriptedDestination(name="out")
    channel = Channel(
        config,
        pipeline=Pipeline(destinations=[DestinationStages("out")]),
        destinations=[(out, RetryPolicy())],
        store=store,
        journals=journals,
        reactor=reactor,
    )
    listener = ListenerConfig(name="main", endpoint="tcp:0")
    intake = Intake(listener, [config], store, EngineSettings(), reactor=reactor, running={"adt": channel})
    return intake, channel, out


def test_a_message_the_channel_processes_at_intake_is_stored_processed_and_sent(journals):
    """Once its channel caught up, a message is stored QUEUED with its delivery, and sent."""
    store, reactor = FakeStore(), InlineThreads()
    intake, channel, out = _intake_with_channel(store, reactor, journals)
    channel.start()
    reply = intake.handle(PROBE % (1, 1), "test").result
    assert msa_codes(reply.decode())[0] == ("AA", "PROBE-1")
    assert store.messages[1].status == "QUEUED" and store.messages[1].deliveries[0].destination == "out"
    assert out.sent == ["PROBE-1"]


def test_a_message_that_could_not_be_stored_no_longer_holds_its_channel_back(journals):
    """A held message whose storing failed is answered AR and holds its channel back no longer."""
    store, reactor = FakeStore(), InlineThreads()
    intake, channel, _ = _intake_with_channel(store, reactor, journals)
    store.failing = True
    reply = intake.handle(PROBE % (1, 1), "test").result  # not caught up yet: held for a pass
    assert msa_codes(reply.decode())[0] == ("AR", "PROBE-1")
    store.failing = False
    channel.start()
    assert channel.processes_at_intake


def test_an_ack_routed_to_a_channel_waits_for_a_pass(journals):
    """An ACK is never answered nor processed at intake: stored RECEIVED, its channel's pass takes it."""
    store, reactor = FakeStore(), InlineThreads()
    intake, channel, out = _intake_with_channel(store, reactor, journals)
    channel.start()
    ack = b"MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ACK^A04^ACK|A1|P|2.5.1\rMSA|AA|C0001\r"
    assert intake.handle(ack, "test").result is None
    assert store.messages[1].status == "RECEIVED" and store.statuses[1] == "QUEUED"
    assert out.sent == ["A1"]
