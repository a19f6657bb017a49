"""ACKs: the builder (whole ACKs compared, per version and mode) and the reading of a reply's MSA."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import HL7Error
from engine.hl7.ack import (
    AckError,
    Recipient,
    Reply,
    Sender,
    _layout,
    build_ack,
    is_enhanced,
    parse_reply,
    read_reply,
)
from engine.hl7.dtm import hl7_timestamp
from engine.hl7.header import read_header
from engine.hl7.message import Delimiters, Message
from tests.fakes.corpus import corpus_entries

NOW = datetime(2026, 11, 27, 4, 44, 0, tzinfo=UTC)
US = Sender("HUB", "CLINIC", "2.5.1")


def ack_for(message: str, code: str, errors=(), control_id="ACK1") -> str:
    header = read_header(message)
    return build_ack(
        Recipient.of(header),
        code,
        sender=US,
        control_id=control_id,
        timestamp=NOW,
        delimiters=header.delimiters,
        errors=errors,
    )


def test_positive_ack_v251_swaps_applications_and_echoes_the_header():
    """AA in 2.5.1: MSH-3/4 ours, MSH-5/6 the sender's, ACK^trigger^ACK, MSH-11/12 echoed, MSA-2 = MSH-10."""
    message = "MSH|^~\\&|PMS^1.2.3^ISO|NORTH|EMR|SOUTH|20260101||ADT^A04^ADT_A01|MSG42|P|2.5.1\rPID|1"
    assert ack_for(message, "AA") == (
        "MSH|^~\\&|HUB|CLINIC|PMS^1.2.3^ISO|NORTH|20261127044400+0000||ACK^A04^ACK|ACK1|P|2.5.1\rMSA|AA|MSG42"
    )


def test_echoed_fields_never_hold_what_ends_a_segment_or_a_frame():
    """FS, VT (and CR, LF) in MSH-3/4/9/10/11/18 are hex-escaped in the ACK; the delimiters stay."""
    message = (
        "MSH|^~\\&|P\x1cMS^1|N\x0b|EMR|SOUTH|20260101||ADT^A\x1c4|M\x1c^42\x0b|P\x1c|2.5.1||||||8859/1\x1c"
    )
    ack = ack_for(message, "AA")
    assert "\x1c" not in ack and "\x0b" not in ack
    assert ack == (
        "MSH|^~\\&|HUB|CLINIC|P\\X1C\\MS^1|N\\X0B\\|20261127044400+0000||ACK^A\\X1C\\4^ACK|ACK1|P\\X1C\\|2.5.1"
        "||||||8859/1\\X1C\\\rMSA|AA|M\\X1C\\^42\\X0B\\"
    )


def test_nak_v25_has_err_with_location_code_severity_and_text():
    """From 2.5 the ERR segment carries ERR-2 location, ERR-3 0357 code, ERR-4 severity and ERR-8 text."""
    message = "MSH|^~\\&|PMS|NORTH|EMR|SOUTH|20260101||ADT^A04|MSG42|P|9.9"
    errors = [AckError(203, "version 9.9 is not supported", ("MSH", 1, 12))]
    header = read_header(message)
    ack = build_ack(Recipient.of(header), "AR", sender=US, control_id="ACK1", timestamp=NOW, errors=errors)
    assert ack.split("\r")[1:] == [
        "MSA|AR|MSG42",
        "ERR||MSH^1^12|203^Unsupported version id^HL70357|E||||version 9.9 is not supported",
    ]
    assert ack.split("\r")[0].endswith("|ACK^A04^ACK|ACK1|P|9.9")


def test_nak_before_25_uses_err1_and_msa3():
    """Before 2.5 the error goes in MSA-3 and ERR-1, and MSH-9 has no structure.

    ERR-1 is segment^sequence^field^code&text&HL70357.
    """
    message = "MSH|^~\\&|LAB|X|HUB|Y|20260101||ORU^R01|M1|P|2.3.1"
    ack = ack_for(message, "AR", [AckError(200, "no channel accepts ORU^R01", ("MSH", 1, 9))])
    assert ack.split("\r") == [
        "MSH|^~\\&|HUB|CLINIC|LAB|X|20261127044400+0000||ACK^R01|ACK1|P|2.3.1",
        "MSA|AR|M1|no channel accepts ORU\\S\\R01",  # our text, escaped in the sender's delimiters
        "ERR|MSH^1^9^200&Unsupported message type&HL70357",
    ]


def test_ack_uses_the_senders_delimiters_and_escapes_our_text():
    """An ACK is written in the sender's encoding characters; our text is escaped in them."""
    message = "MSH$%~\\&$LAB$X$HUB$Y$20260101$$ORU%R01$M1$P$2.5"
    ack = ack_for(message, "AE", [AckError(102, "bad value $ here", ("OBX", 1, 5))])
    assert ack.split("\r") == [
        "MSH$%~\\&$HUB$CLINIC$LAB$X$20261127044400+0000$$ACK%R01%ACK$ACK1$P$2.5",
        "MSA$AE$M1",
        "ERR$$OBX%1%5$102%Data type error%HL70357$E$$$$bad value \\F\\ here",
    ]


def test_empty_version_falls_back_to_the_configured_default():
    """A sender without MSH-12 gets an ACK in our default version, so the ACK still names one."""
    ack = ack_for("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1", "AA")
    assert ack.split("\r")[0].endswith("|ACK^A01^ACK|ACK1||2.5.1")


def test_charset_is_echoed_in_msh18():
    """MSH-18 of the sender is echoed so the receiver decodes the ACK as it encoded the message."""
    ack = ack_for("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5|||AL|NE||8859/1", "CA")
    assert (
        ack.split("\r")[0]
        == "MSH|^~\\&|HUB|CLINIC|A|B|20261127044400+0000||ACK^A01^ACK|ACK1|P|2.5||||||8859/1"
    )


def test_enhanced_mode_is_detected_from_msh15_or_msh16():
    """MSH-15 or MSH-16 valued means enhanced acknowledgement mode; both empty means original mode."""
    assert is_enhanced(read_header("MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5|||AL"))
    assert is_enhanced(read_header("MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5||||NE"))
    assert not is_enhanced(read_header("MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5"))


def test_unreadable_header_still_gets_an_ack_in_default_delimiters():
    """With no valid header we answer in |^~\\& with whatever could be salvaged."""
    ack = build_ack(
        Recipient(control_id="Q1"),
        "AR",
        sender=US,
        control_id="ACK1",
        timestamp=NOW,
        delimiters=Delimiters.DEFAULT,
        errors=[AckError(100, "no MSH segment")],
    )
    assert ack.split("\r") == [
        "MSH|^~\\&|HUB|CLINIC|||20261127044400+0000||ACK|ACK1||2.5.1",
        "MSA|AR|Q1",
        "ERR|||100^Segment sequence error^HL70357|E||||no MSH segment",
    ]


def test_python_hl7_reads_our_ack():
    """The reference parser reads our ACK: MSA-1, MSA-2 and ERR-3 where we put them."""
    message = "MSH|^~\\&|PMS|NORTH|EMR|SOUTH|20260101||ADT^A04^ADT_A01|MSG42|P|2.5.1"
    ack = hl7.parse(ack_for(message, "AR", [AckError(207, "store down")]))
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSA")[2]) == "MSG42"
    assert str(ack.segment("ERR")[3][0][0]) == "207"


_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    recipient=st.builds(
        Recipient,
        _text,
        _text,
        _text,
        _text,
        _text,
        st.sampled_from(["", "2.1", "2.3", "2.4", "2.5", "2.5.1", "2.9", "x"]),
        _text,
    ),
    code=st.sampled_from(["AA", "CA", "AE", "AR"]),
    control_id=_text,
    delimiters=st.sampled_from(
        [Delimiters.DEFAULT, Delimiters.from_msh("#", "$*!@"), Delimiters.from_msh("|", "^~\\&#")]
    ),
)
def test_cached_ack_templates_lay_out_the_same_text(recipient, code, control_id, delimiters):
    """An error-free ACK comes from a cached template, equal to the one laid out field by field.

    Whatever the fields hold.
    """
    for _ in range(2):  # the first call fills the cache, the second reads it
        ack = build_ack(
            recipient, code, sender=US, control_id=control_id, timestamp=NOW, delimiters=delimiters
        )
        assert ack == _layout(recipient, code, US, control_id, hl7_timestamp(NOW), delimiters, ())


def test_corpus_acks_from_templates_equal_the_laid_out_ones():
    """Every readable corpus header gets the same ACK text from the template as from the full layout."""
    checked = 0
    for entry in corpus_entries():
        text = entry.path.read_bytes().decode("latin-1")
        try:
            header = read_header(text)
        except HL7Error:
            continue
        recipient = Recipient.of(header)
        expected = _layout(recipient, "AA", US, "ACK1", hl7_timestamp(NOW), header.delimiters, ())
        assert (
            build_ack(
                recipient, "AA", sender=US, control_id="ACK1", timestamp=NOW, delimiters=header.delimiters
            )
            == expected
        )
        checked += 1
    assert checked > 50


# --- reading a reply: parse_reply, read_reply ------------------------------------------------------


def _every_segment(text: str) -> Reply:
    """The reading parse_reply must give: split every segment, the first MSA's fields 1 and 2.

    The separator comes from a leading MSH.
    """
    segments = [s for s in re.split(r"\r\n|\n|\r", text) if s]
    separator = segments[0][3] if segments and segments[0].startswith("MSH") and len(segments[0]) > 3 else "|"
    for segment in segments:
        if segment.startswith("MSA" + separator):
            fields = segment.split(separator)
            return Reply(code=fields[1], control_id=fields[2] if len(fields) > 2 else "", text=text)
    return Reply(code="", control_id="", text=text)


_PIECES = [
    "MSH",
    "MSA",
    "MSA|",
    "MSA#",
    "ERR",
    "|",
    "#",
    "^",
    "~",
    "AA",
    "AE",
    "C1",
    "\r",
    "\n",
    "\r\n",
    " ",
    "é",
    "x",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=24).map("".join))
@example("MSH|^~\\&|A\rMSA|AA|C1\r")
@example("\n\rMSH#^~\\&#A\nMSA|AA|C1\rMSA#AE#C2#x\r")
@example("MSA|AA")
@example("MSH\rMSA|AA|C1")
@example("xMSA|AA|C1\nMSA|AE|C2")
def test_reading_only_the_msa_gives_what_splitting_every_segment_gives(text):
    """Any text, well-formed or not, gives the code, control id and text of the every-segment reading."""
    assert read_reply(text) == _every_segment(text)


@pytest.mark.parametrize("entry", corpus_entries(), ids=lambda entry: entry.file)
def test_corpus_replies_read_as_the_full_parsers_read_them(entry):
    """Every corpus file with an MSA: MSA-1 and MSA-2 as the engine's parser and python-hl7 read them.

    Both parsers read the whole message.
    """
    payload = entry.path.read_bytes()
    reply = parse_reply(payload)
    assert reply == _every_segment(payload.decode("utf-8", errors="replace"))
    text = payload.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        message = Message.parse(text)
    except HL7Error:
        return
    msa = message.segment("MSA")
    if msa is None or text.startswith("\ufeff") or payload.startswith(b"\xef\xbb\xbf"):
        return
    assert (reply.code, reply.control_id) == (msa.field(1), msa.field(2))
    python_hl7 = hl7.parse("\r".join(line for line in re.split(r"\r\n|\n|\r", text) if line))
    assert (reply.code, reply.control_id) == (
        str(python_hl7.segment("MSA")(1)),
        str(python_hl7.segment("MSA")(2)),
    )


def test_the_corpus_holds_replies():
    """The corpus test above compares real ACKs (AA, AE with ERR, AR), not only messages without MSA."""
    codes = {parse_reply(entry.path.read_bytes()).code for entry in corpus_entries()}
    assert {"AA", "AE", "AR"} <= codes
