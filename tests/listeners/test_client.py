"""Reading a reply's MSA (``parse_reply``): the same answer as a whole-message parse, from only MSH and MSA."""

from __future__ import annotations

import re

import hl7
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import HL7Error
from engine.hl7.message import Message
from engine.listeners.client import Reply, parse_reply, read_reply
from tests.corpus_util import corpus_entries


def _every_segment(text: str) -> Reply:
    """The reading parse_reply must give: split every segment, separator from a leading MSH, the first MSA's fields 1 and 2."""
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
    """Every corpus file with an MSA: MSA-1 and MSA-2 as the engine's parser and python-hl7 read the whole message."""
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
