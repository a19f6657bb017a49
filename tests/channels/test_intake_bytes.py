"""Bytes a charset cannot decode, in the header and indexed fields, through the intake into the real store.

A legacy sender writing Latin-1 without MSH-18 must never be told "resend later": such a message
is stored (its bytes exactly, its indexed columns with a replacement character) and answered as
any other, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from engine.channels.intake import Intake
from engine.channels.spec import ChannelConfig
from engine.config import EngineSettings, ListenerConfig
from engine.hl7.ack import parse_reply
from engine.store.reads import MessageQuery

LATIN1 = (
    b"MSH|^~\\&|LAB\xc9|H\xd4PITAL|HUB|TEST|20260101120000||ADT^A04|C\xe9\xff1|P|2.5.1\r"
    b"PID|1||M\xdcLLER7^^^H\xd4P^MR||M\xfcller^J\xfcrgen\r"
)

# A field's bytes: anything but what ends a field or a segment.
_FIELD = st.binary(min_size=1, max_size=24).filter(lambda b: not set(b) & set(b"|\r\n"))
_CHARSETS = st.sampled_from([b"", b"8859/1", b"UNICODE UTF-8", b"ISO IR87", b"BIG-5", b"KS X 1001", b"ASCII"])


def _intake(store) -> Intake:
    channel = ChannelConfig(name="everything", source="main", accept={"types": ["*"]})
    listener = ListenerConfig(name="main", endpoint="tcp:0")
    return Intake(listener, [channel], store, EngineSettings(), reactor=reactor)


def _message(application: bytes, facility: bytes, control_id: bytes, mrn: bytes, charset: bytes) -> bytes:
    return (
        b"MSH|^~\\&|%s|%s|HUB|TEST|20260101120000||ADT^A04|%s|P|2.5.1||||||%s\rPID|1||%s^^^PMS^MR||DOE^JANE\r"
        % (application, facility, control_id, charset, mrn)
    )


def generated(count: int) -> list[bytes]:
    """``count`` messages whose MSH-3/4/10, PID-3 and MSH-18 hypothesis chose (derandomized: same each run).

    Drawn up front: the store answers on the reactor, which a hypothesis example cannot wait for.
    """
    drawn: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None)
    @given(application=_FIELD, facility=_FIELD, control_id=_FIELD, mrn=_FIELD, charset=_CHARSETS)
    def draw(application, facility, control_id, mrn, charset):
        drawn.append(_message(application, facility, control_id, mrn, charset))

    draw()
    return drawn


@pytest_twisted.inlineCallbacks
def _newest(store):
    [summary] = yield store.search(MessageQuery(limit=1))
    stored = yield store.get(summary.id)
    return summary, stored


@pytest_twisted.inlineCallbacks
def test_latin1_header_and_patient_id_are_stored_and_accepted(open_store):
    """MSH-3/4/10 and PID-3 in Latin-1 without MSH-18: AA, the raw bytes kept, the columns with '?'."""
    store = open_store()
    reply = parse_reply((yield _intake(store).handle(LATIN1, "127.0.0.1:1")), "latin-1")
    summary, stored = yield _newest(store)
    assert (reply.code, reply.control_id) == ("AA", "C\xe9\xff1")  # MSA-2 echoes the bytes sent
    assert stored.raw == LATIN1 and stored.ack_code == "AA"
    assert (summary.sending_application, summary.sending_facility) == ("LAB?", "H?PITAL")
    assert (summary.control_id, summary.patient_id) == ("C??1", "M?LLER7")


@pytest_twisted.inlineCallbacks
def test_no_header_bytes_make_the_intake_answer_resend_later(open_store):
    """Whatever bytes MSH-3/4/10 and PID-3 hold, in whatever MSH-18: stored exactly, never ERR 206/207."""
    store = open_store()
    intake = _intake(store)
    for raw in generated(150):
        reply = yield intake.handle(raw, "127.0.0.1:1")
        summary, stored = yield _newest(store)
        assert stored.raw == raw, raw
        assert reply is not None and b"|206^" not in reply and b"|207^" not in reply, (raw, reply)
        assert summary.ack_code in ("AA", "AR", "CA", "CR") and stored.ack is not None, raw
