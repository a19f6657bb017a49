"""engine.channels.replies: a batch's ACKs in their envelope, and whom an unreadable header is answered to."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.channels.replies import batch_reply, salvage
from engine.hl7.ack import Recipient, Sender
from engine.hl7.batch import split_batch
from engine.hl7.message import Delimiters

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ACKS = [
    "MSH|^~\\&|HUB|TEST|||x||ACK|1|P|2.5.1\rMSA|AA|C1",
    "MSH|^~\\&|HUB|TEST|||x||ACK|2|P|2.5.1\rMSA|AE|C2",
]


def test_a_batch_is_answered_in_a_bhs_bts_envelope():
    """BHS names us, the time and the answered batch; BTS counts the ACKs; no FHS/FTS unless sent."""
    batch = split_batch(
        "BHS|^~\\&|PMS|CLINIC|||||||B7\rMSH|^~\\&|PMS|CLINIC|HUB|TEST|x||ADT^A01|C1|P|2.5.1\rBTS|1"
    )
    reply = batch_reply(
        batch,
        ACKS,
        sender=Sender("HUB", "TEST"),
        timestamp=WHEN,
        control_id="R9",
        delimiters=Delimiters.DEFAULT,
    )
    assert reply.split("\r") == [
        "BHS|^~\\&|HUB|TEST|||20260102030405+0000||||R9|B7",
        *"\r".join(ACKS).split("\r"),
        "BTS|2",
    ]


def test_a_file_batch_is_answered_in_a_file_envelope_too():
    """A batch that came with FHS/FTS is answered with FHS, BHS ... BTS, FTS."""
    batch = split_batch(
        "FHS|^~\\&|PMS\rBHS|^~\\&|PMS\rMSH|^~\\&|PMS|CLINIC|HUB|TEST|x||ADT^A01|C1|P|2.5.1\rBTS|1\rFTS|1"
    )
    reply = batch_reply(
        batch,
        ACKS[:1],
        sender=Sender("HUB", "TEST"),
        timestamp=WHEN,
        control_id="R9",
        delimiters=Delimiters.DEFAULT,
    ).split("\r")
    assert reply[0].startswith("FHS|^~\\&|HUB|TEST|") and reply[1].startswith("BHS|")
    assert reply[-2:] == ["BTS|1", "FTS|1"]


def test_an_unreadable_header_is_answered_to_whoever_it_names():
    """MSH-3, MSH-4 and MSH-10 are salvaged (escaped in our delimiters) from a header too broken to read."""
    recipient, delimiters = salvage("junk\rMSH#^~\\&#PMS#CLINIC######ID|7#P")
    assert delimiters == Delimiters.DEFAULT
    assert recipient == Recipient(
        sending_application="PMS", sending_facility="CLINIC", control_id="ID\\F\\7", version=""
    )
    assert salvage("no header at all") == (Recipient(), Delimiters.DEFAULT)
    assert salvage("MSH\rPID|1||X\r") == (Recipient(), Delimiters.DEFAULT)  # no separator after MSH
