"""Hostile frames against a real listener and store: none jams a connection, cuts a reply or leaks to the log.

Frames are drawn by hypothesis up front (derandomized, so CI sends the same ones every run) and
sent over a real socket, each followed by a normal message that must be accepted.
"""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from engine.errors import HL7Error
from engine.hl7.ack import parse_reply
from engine.hl7.batch import looks_like_batch
from engine.hl7.charset import decode
from engine.hl7.header import is_ack, read_header
from engine.listeners.client import MLLPClient, ReplyTimeout
from engine.service import Engine
from engine.store.reads import MessageQuery
from tests.fakes.corpus import corpus_entries
from tests.fakes.harness import in_thread, make_config, port_of, start_engine

PROBE = b"MSH|^~\\&|PROBE|CLINIC|HUB|TEST|20260101120000||ADT^A08|PROBE-%d|P|2.5.1\rPID|1||P%d\r"

_PIECES = st.sampled_from(
    [
        b"MSH", b"MSH|^~\\&|", b"|", b"^~\\&", b"^", b"~", b"\\", b"&", b"\r", b"\n", b" ",
        b"PID|1||", b"EVN|", b"MSA|AA|", b"BHS|^~\\&|", b"BTS|", b"FHS|^~\\&|", b"FTS|1",
        b"ADT^A04", b"ACK", b"ACK^A04^ACK", b"2.5.1", b"2.3", b"9.9", b"P", b"T", b"AL", b"NE",
        b"ISO IR87", b"BIG-5", b"KS X 1001", b"UNICODE UTF-16", b"8859/1",
        b"\x1b$B", b"\x1b(J", b"\xff", b"\xe9", b"\x00", b"\x0b", b"\x1c", b"\xef\xbb\xbf", b"\xff\xfe",
    ]
)  # fmt: skip
_HEADER = b"MSH|^~\\&|APP|FAC|HUB|TEST|20260101120000||ADT^A04|C1|P|2.5.1"
_GARBAGE = st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=24).map(b"".join)
# Garbage alone, or after a valid header's first fields (so that deeper paths are reached too).
_FRAMES = st.one_of(
    _GARBAGE,
    st.tuples(st.integers(0, len(_HEADER)), _GARBAGE).map(lambda cut: _HEADER[: cut[0]] + cut[1]),
).filter(lambda payload: b"\x1c\r" not in payload)  # FS CR would end the frame early: a framing test


def drawn_frames(count: int) -> list[bytes]:
    """``count`` hostile payloads hypothesis chose (derandomized: the same every run)."""
    drawn: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None)
    @given(_FRAMES)
    def draw(payload):
        drawn.append(payload)

    draw()
    return drawn


def _never_answered(payload: bytes) -> bool:
    """A single readable acknowledgement: stored and never answered (answering would loop)."""
    text = decode(payload).text
    if looks_like_batch(text):
        return False
    try:
        return is_ack(read_header(text))
    except HL7Error:
        return False


def send_each_with_a_probe(port: int, payloads: list[bytes], deadline: float) -> list[str]:
    """Send every payload, take its answer, then a probe's; what went wrong, one line per payload.

    Bounded in time. One at a time: with two frames in flight the receiver's second reply waits for
    the client's delayed TCP ACK (Nagle), 40 ms a frame.
    """
    problems: list[str] = []
    client = MLLPClient("127.0.0.1", port, timeout=5)
    try:
        for n, payload in enumerate(payloads):
            if time.monotonic() > deadline:
                problems.append(f"out of time after {n} frames")
                break
            try:
                client.send(payload)
                answers = [] if _never_answered(payload) else [client.receive()]
                probe = parse_reply(client.request(PROBE % (n, n)), "latin-1")
            except (ReplyTimeout, ConnectionError) as error:
                problems.append(f"{payload!r}: {error}")
                client.close()
                client = MLLPClient("127.0.0.1", port, timeout=5)
                continue
            if (probe.code, probe.control_id) != ("AA", f"PROBE-{n}"):
                problems.append(f"{payload!r}: {len(answers)} answers, then {probe.text!r} for the probe")
    finally:
        client.close()
    return problems


@pytest_twisted.inlineCallbacks
def test_no_generated_frame_jams_a_connection(tmp_path):
    """2,000 generated hostile frames, each answered exactly once (an ACK never), each probe after it AA."""
    engine = start_engine(make_config(tmp_path))
    try:
        payloads = drawn_frames(2000)
        started = time.monotonic()
        problems = yield in_thread(send_each_with_a_probe, port_of(engine), payloads, started + 25)
        assert problems == []
        assert time.monotonic() - started < 30
    finally:
        started = time.monotonic()
        yield engine.stopService()
        assert time.monotonic() - started < 5  # nothing left in flight for shutdown to wait for


class LogLines:
    """Every log event at info level or above, formatted, while it is attached."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, event) -> None:
        level = event.get("log_level")
        if level is not None and level >= LogLevel.info:
            text = formatEvent(event) or ""
            if event.get("log_failure") is not None:
                text += "\n" + event["log_failure"].getTraceback()
            self.lines.append(text)

    def __enter__(self) -> LogLines:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        globalLogPublisher.removeObserver(self)


@pytest_twisted.inlineCallbacks
def test_empty_frames_are_answered_and_counted_not_stored(tmp_path):
    """500 empty frames: 500 AR (ERR 100), no stored row, 500 empty_frame events, at most one warning."""
    events: list[str] = []
    engine = Engine(make_config(tmp_path), reactor, observer=lambda event, fields: events.append(event))
    engine.startService()

    def send(port: int) -> list[bytes]:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            for n in range(500):
                client.send(b"" if n % 2 else b" \r\n")
            answers = [client.receive() for _ in range(500)]
            answers.append(client.request(PROBE % (1, 1)))
            return answers

    try:
        with LogLines() as log:
            answers = yield in_thread(send, engine.listeners["main"].port)
        assert {parse_reply(a).code for a in answers[:-1]} == {"AR"}
        assert all(b"|100^" in a for a in answers[:-1])
        assert parse_reply(answers[-1]).code == "AA"
        stored = yield engine.store.count(MessageQuery())
        assert stored == 1  # the probe alone
        assert events.count("empty_frame") == 500
        assert len([line for line in log.lines if "empty frame" in line]) <= 1
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_frame_bytes_in_msh10_are_escaped_in_msa2(tmp_path):
    """MSH-10 holding FS, VT and FS CR's FS: one whole reply, MSA-2 hex-escaped; the connection goes on."""
    engine = start_engine(make_config(tmp_path))
    hostile = b"MSH|^~\\&|A|B|HUB|TEST|20260101||ADT^A04|X\x1cY\x0bZ\x1c|P|2.5.1\rPID|1||9\r"

    def send(port: int) -> list[bytes]:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            return [client.request(hostile), client.request(PROBE % (2, 2))]

    try:
        answer, probe = yield in_thread(send, port_of(engine))
        assert parse_reply(answer).control_id == "X\\X1C\\Y\\X0B\\Z\\X1C\\"
        assert b"\x1c" not in answer and b"\x0b" not in answer
        assert parse_reply(probe).code == "AA"
    finally:
        yield engine.stopService()


def big_batch(members: int) -> bytes:
    """A BHS..BTS batch of ``members`` small ADT^A04 messages (about 130 bytes each)."""
    member = b"MSH|^~\\&|PMS|NORTH|HUB|TEST|20260101||ADT^A04|B%d|P|2.5.1\rPID|1||%d^^^PMS^MR||DOE^JANE\r"
    return b"BHS|^~\\&|PMS|NORTH\r" + b"".join(member % (n, n) for n in range(members)) + b"BTS|%d" % members


@pytest_twisted.inlineCallbacks
def test_other_connections_are_answered_while_a_large_batch_is_read(tmp_path):
    """While a 2.7 MiB batch (30,000 messages) is split, read and stored, another sender's messages get AA."""
    batch = big_batch(30000)
    engine = start_engine(make_config(tmp_path, max_frame_bytes=8 * 1024 * 1024))
    sent, done = threading.Event(), threading.Event()

    def send_batch(port: int) -> list[bytes]:
        try:
            with MLLPClient("127.0.0.1", port, timeout=60) as client:
                client.send(batch)
                sent.set()
                return re.findall(rb"\rMSA\|(\w\w)\|", client.receive())
        finally:
            done.set()

    def probe(port: int) -> int:
        """How many probes were answered between the batch's last byte and its reply."""
        answered = 0
        with MLLPClient("127.0.0.1", port, timeout=60) as client:
            for n in range(100_000):
                if done.wait(0.002):
                    return answered
                was_sent = sent.is_set()
                assert parse_reply(client.request(PROBE % (n, n))).code == "AA"
                answered += was_sent and not done.is_set()
        return answered

    try:
        port = port_of(engine)
        probes = in_thread(probe, port)
        codes, answered = yield defer.gatherResults([in_thread(send_batch, port), probes])
        assert codes == [b"AA"] * 30000
        # Read on the reactor, the batch held every other connection until its reply was written.
        assert answered >= 10, answered
    finally:
        yield engine.stopService()


def identifiers(payload: bytes) -> set[str]:
    """Every MSH-10, PID-3 and PID-5 value of a message, whole and by component, of 4 characters or more."""
    found: set[str] = set()
    for segment in re.split(r"\r\n|\n|\r", decode(payload).text):
        if len(segment) < 4 or segment[:3] not in ("MSH", "PID"):
            continue
        fields = segment.split(segment[3])
        wanted = [fields[9]] if segment.startswith("MSH") and len(fields) > 9 else []
        if segment.startswith("PID"):
            wanted = [fields[n] for n in (3, 5) if len(fields) > n]
        for value in wanted:
            found.update(v for v in re.split(r"[\^~&]", value) + [value] if len(v.strip()) >= 4)
    return found


@pytest_twisted.inlineCallbacks
def test_no_identifier_reaches_the_log_at_info_or_above(tmp_path):
    """The corpus and hostile frames through a real engine: no MSH-10, PID-3 or PID-5 value in the log."""
    engine = start_engine(make_config(tmp_path))
    payloads = [entry.path.read_bytes() for entry in corpus_entries()]
    payloads += [
        p + b"\rPID|1||MRN%05d^^^PMS^MR||SURNAME%d^GIVEN\r" % (n, n) for n, p in enumerate(drawn_frames(300))
    ]
    payloads.append(b"MSH|^~\\&|A|B|HUB|TEST|20260101||ADT^A04|CTRL\xe9\xff77|P|2.5.1\rPID|1||MRN\xe977\r")
    payloads.append(b"MSH|^~\\&|A|B|HUB|TEST|20260101||ADT^A04|CTRL-BAD|P|9.9\rPID|1||MRN-REJECTED\r")
    payloads.append(b"MSH|^~\\&|A|B|HUB|TEST|20260101||NOPE^X|CTRL-NOPE|P|2.5.1\rPID|1||MRN-NOPE\r")
    try:
        with LogLines() as log:
            problems = yield in_thread(
                send_each_with_a_probe, port_of(engine), payloads, time.monotonic() + 25
            )
            # The store fails: the answers say so, and the log must not quote the message either.
            yield engine.store.stop()
            yield in_thread(send_each_with_a_probe_expecting_failure, port_of(engine), payloads[:20])
        assert problems == []
        text = "\n".join(log.lines)
        leaked = sorted(value for p in payloads for value in identifiers(p) if value in text)
        assert leaked == []
        assert log.lines  # the log was captured: rejections and store failures are logged
    finally:
        yield engine.stopService()


def send_each_with_a_probe_expecting_failure(port: int, payloads: list[bytes]) -> None:
    """Send each payload; every answer comes (negative: the store is down), none is waited for in vain."""
    with MLLPClient("127.0.0.1", port, timeout=5) as client:
        for payload in payloads:
            if not _never_answered(payload):
                client.request(payload)


@pytest_twisted.inlineCallbacks
def test_a_store_error_never_quotes_the_message_in_the_log(tmp_path, postgres_url):
    """PostgreSQL refuses a row (a unique index): the sender gets AR 207, the log no MSH-10 nor PID-3."""
    engine = start_engine(make_config(tmp_path, store_url=postgres_url))
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE UNIQUE INDEX one_per_control_id ON messages (control_id)")
    message = b"MSH|^~\\&|A|B|HUB|TEST|20260101||ADT^A04|CTRL-TWICE-1|P|2.5.1\rPID|1||MRN-UNIQUE-77\r"

    def send_twice(port: int) -> list[bytes]:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            return [client.request(message), client.request(message)]

    try:
        with LogLines() as log:
            first, second = yield in_thread(send_twice, port_of(engine))
        assert (parse_reply(first).code, parse_reply(second).code) == ("AA", "AR")
        assert b"|207^" in second
        text = "\n".join(log.lines)
        assert "storing messages failed" in text  # the failure is logged, without the row it refused
        assert "CTRL-TWICE-1" not in text and "MRN-UNIQUE-77" not in text
    finally:
        yield engine.stopService()
