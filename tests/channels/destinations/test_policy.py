"""ACK -> outcome: every code, with ERR in the 2.3 layout (ERR-1) and the 2.5 layout (ERR-3)."""

from __future__ import annotations

import pytest

from engine.channels.destinations.policy import decide, error_codes, read_ack
from engine.channels.destinations.spec import AckPolicy
from engine.hl7.ack import parse_reply
from engine.hl7.charset import decode
from engine.model import Outcome
from tests.fakes.corpus import CORPUS_DIR, corpus_entries
from tests.fakes.outbound import ack

DEFAULT = AckPolicy()
SENT, RETRY, ERROR = Outcome.SENT, Outcome.RETRY, Outcome.ERROR

# (MSA-1, ERR codes, outcome under the default policy)
TABLE = [
    ("AA", (), SENT),
    ("CA", (), SENT),
    ("AE", (), ERROR),
    ("AE", (101,), ERROR),
    ("AE", (207,), ERROR),
    ("CR", (), ERROR),
    ("CR", (203,), ERROR),
    ("CE", (), RETRY),
    ("CE", (207,), RETRY),
    ("AR", (), RETRY),
    ("AR", (200,), ERROR),
    ("AR", (201,), ERROR),
    ("AR", (202,), ERROR),
    ("AR", (203,), ERROR),
    ("AR", (204,), RETRY),
    ("AR", (205,), RETRY),
    ("AR", (206,), RETRY),
    ("AR", (207,), RETRY),
    ("AR", (100,), RETRY),
    ("AR", (207, 203), ERROR),
    ("AR", (206, 207), RETRY),
]


@pytest.mark.parametrize("version", ["2.3", "2.5.1"])
@pytest.mark.parametrize(("code", "errors", "expected"), TABLE)
def test_default_policy_follows_the_standards_meanings(code, errors, expected, version):
    """Each MSA-1/ERR combination gets the outcome the standard's meaning implies, in either ERR layout."""
    reply = ack(code, "MSG-1", *errors, version=version)
    result = decide(DEFAULT, reply, sent_control_id="MSG-1")
    assert (result.outcome, result.response_code, result.response) == (expected, code, reply)


@pytest.mark.parametrize("version", ["2.3", "2.5.1"])
def test_error_codes_are_read_from_either_layout(version):
    """ERR-3.1 (2.5+) and every repetition of ERR-1.4.1 (before 2.5) give the table 0357 codes, in order."""
    text = ack("AR", "MSG-1", 207, 203, version=version).decode()
    assert error_codes(text) == [207, 203]


def test_error_codes_of_unreadable_text_are_empty():
    """Text that is not an HL7 message has no ERR codes (and does not raise)."""
    assert error_codes("garbage") == []


def test_reason_names_codes_but_not_the_receivers_text():
    """The reason names MSA-1 and the ERR codes; the ACK's free text (may quote patient data) stays out."""
    reply = ack("AR", "MSG-1", 203, version="2.5.1", text="DOE JOHN 1970")
    result = decide(DEFAULT, reply, sent_control_id="MSG-1")
    assert "203" in result.reason and "AR" in result.reason
    assert "DOE" not in result.reason


@pytest.mark.parametrize("code", ["AA", "AE", "AR", "CA"])
def test_ack_for_another_control_id_is_a_mismatch(code):
    """Whatever it says, an ACK whose MSA-2 is not the control id sent is the mismatch case (retry)."""
    result = decide(DEFAULT, ack(code, "MSG-2"), sent_control_id="MSG-1")
    assert result.outcome == RETRY
    assert "MSG-2" in result.reason and "MSG-1" in result.reason


@pytest.mark.parametrize(
    "reply",
    [
        None,
        b"",
        b"MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101||ACK|1|P|2.5.1\r",
        b"<html>busy</html>",
        b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rMSA|XX|MSG-1\r",
    ],
    ids=["none", "empty", "no-msa", "not-hl7", "unknown-code"],
)
def test_unreadable_replies_follow_the_unreadable_policy(reply):
    """No reply, an empty one, one without MSA, or with an unknown MSA-1.

    The unreadable case (retry by default).
    """
    assert decide(DEFAULT, reply, sent_control_id="MSG-1").outcome == RETRY
    assert decide(AckPolicy(unreadable="error"), reply, sent_control_id="MSG-1").outcome == ERROR


def test_timeout_follows_the_timeout_policy():
    """A timed-out attempt is the timeout case, whatever reply is passed."""
    assert decide(DEFAULT, None, sent_control_id="MSG-1", timed_out=True).outcome == RETRY
    assert decide(AckPolicy(timeout="error"), None, sent_control_id="MSG-1", timed_out=True).outcome == ERROR


def test_a_custom_policy_overrides_each_code():
    """Per partner, AE can mean retry and AR error whatever ERR says; CA can even be refused."""
    policy = AckPolicy(AE="retry", AR="error", CA="error", mismatch="error")
    assert decide(policy, ack("AE", "MSG-1", 101), sent_control_id="MSG-1").outcome == RETRY
    assert decide(policy, ack("AR", "MSG-1", 207), sent_control_id="MSG-1").outcome == ERROR
    assert decide(policy, ack("AR", "MSG-1"), sent_control_id="MSG-1").outcome == ERROR
    assert decide(policy, ack("CA", "MSG-1"), sent_control_id="MSG-1").outcome == ERROR
    assert decide(policy, ack("AA", "MSG-9"), sent_control_id="MSG-1").outcome == ERROR


def test_ar_error_codes_are_configurable():
    """With AR: by_error_code, ar_error_codes lists the ERR codes that make AR an error."""
    policy = AckPolicy(ar_error_codes=(205, 207))
    assert decide(policy, ack("AR", "MSG-1", 207), sent_control_id="MSG-1").outcome == ERROR
    assert decide(policy, ack("AR", "MSG-1", 203), sent_control_id="MSG-1").outcome == RETRY


def test_real_nak_for_an_unsupported_version_is_an_error():
    """nHapi's AR with ERR-3 203 (unsupported version id) is an error: resending unchanged fails again."""
    reply = (CORPUS_DIR / "ack" / "nhapi_nak_ar_unsupported_version.hl7").read_bytes()
    result = decide(DEFAULT, reply, sent_control_id="9299381")
    assert (result.outcome, result.response_code) == (ERROR, "AR")


def test_real_ack_without_msa2_is_a_mismatch():
    """HAPI's AR without MSA-2 cannot be matched to the message sent: the mismatch case."""
    reply = (CORPUS_DIR / "ack" / "hapi_hoh_ack_ar_utf8.hl7").read_bytes()
    assert decide(AckPolicy(mismatch="error"), reply, sent_control_id="33").outcome == ERROR


_LATIN1_ACK = "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101||ACK^A01^ACK|A1|P|2.5.1|||||8859/1\rMSA|AA|MSG-é\r"


@pytest.mark.parametrize(
    "reply",
    [
        ack("AA", "MSG-1"),
        ack("AR", "MSG-1", 207, 203),
        b"\xef\xbb\xbf" + ack("AA", "MSG-1"),
        _LATIN1_ACK.encode("latin-1"),
        _LATIN1_ACK.replace("8859/1", "UNICODE UTF-16").encode("utf-16"),
        ack("AA", "MSG-1").replace(b"MSG-1", b"MSG-\xff"),
        b"MSH#^~\\&#LAB\nMSA#AE#MSG-1\n",
        *(entry.path.read_bytes() for entry in corpus_entries() if entry.file.startswith("ack/")),
    ],
)
def test_a_reply_read_once_reads_msa_as_parse_reply_in_its_own_charset(reply):
    """read_ack decodes once by MSH-18 and reads the MSA-1 and MSA-2 parse_reply reads in that charset.

    Byte order marks, 8859/1, UTF-16 and stray bytes alike.
    """
    decoded = decode(reply)
    expected = parse_reply(reply, decoded.codec)
    read = read_ack(reply)
    assert (read.code, read.control_id, read.text, read.reply) == (
        expected.code,
        expected.control_id,
        decoded.text,
        reply,
    )
    assert read.code
