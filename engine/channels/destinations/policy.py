"""What a downstream reply means for a delivery: one pure function from ACK to outcome.

MLLP and HTTP destinations both hand the reply they got (or the fact that none came) to
``decide``; the per-destination ``AckPolicy`` says what each case means. The reason written on
the result names codes, never message content (an ACK's text may quote patient data).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.channels.destinations.spec import AckPolicy
from engine.errors import HL7Error
from engine.hl7.ack import ERROR_TEXTS, parse_reply, read_reply
from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.model import DeliveryResult, Outcome

__all__ = ["Ack", "decide", "error_codes", "judge", "read_ack", "unexpected_failure", "unexpected_result"]

log = Logger()

_ACTION_OUTCOMES = {"sent": Outcome.SENT, "retry": Outcome.RETRY, "error": Outcome.ERROR}

_MEANINGS = {
    "AA": "application accept",
    "CA": "commit accept",
    "AE": "application error: the message must be fixed first",
    "CR": "commit reject: message type, version or processing id unacceptable",
    "CE": "commit error: not accepted now",
    "AR": "application reject",
}


@dataclass(slots=True)
class Ack:
    """A downstream reply read once: MSA-1 and MSA-2, and the text its ERR codes are read from.

    MSA is read by ``parse_reply`` in the reply's MSH-18 charset.
    """

    reply: bytes
    code: str
    control_id: str
    text: str


def read_ack(reply: bytes) -> Ack:
    """Decode a non-empty reply by its MSH-18 and read its MSA."""
    decoded = decode(reply)
    # A reply that decoded cleanly and whole is the text parse_reply would decode again.
    msa = read_reply(decoded.text) if decoded.clean and not decoded.bom else parse_reply(reply, decoded.codec)
    return Ack(reply, msa.code, msa.control_id, decoded.text)


def decide(
    policy: AckPolicy, reply: bytes | None, *, sent_control_id: str, timed_out: bool = False
) -> DeliveryResult:
    """The result of one delivery attempt, from the reply (None or b'' when there was none) and the policy."""
    if timed_out:
        return _result(policy.timeout, None, "", "no reply before the ACK timeout")
    if not reply:
        return _result(policy.unreadable, reply, "", "empty reply")
    return judge(policy, read_ack(reply), sent_control_id=sent_control_id)


def judge(policy: AckPolicy, ack: Ack, *, sent_control_id: str) -> DeliveryResult:
    """``decide`` for a reply already read.

    The MLLP destination reads it once, to match it to the message too.
    """
    reply = ack.reply
    code = ack.code.strip().upper()
    if not code:
        return _result(policy.unreadable, reply, "", "the reply has no MSA segment")
    if ack.control_id != sent_control_id:
        return _result(
            policy.mismatch,
            reply,
            code,
            f"the ACK answers control id {ack.control_id!r}, not the {sent_control_id!r} sent",
        )
    if code == "AR":
        return _rejected(policy, reply, ack.text)
    action = getattr(policy, code, None) if code in _MEANINGS else None
    if action is None:
        return _result(policy.unreadable, reply, code[:8], f"unknown MSA-1 code {code[:8]!r}")
    codes = error_codes(ack.text)
    detail = f" (ERR {', '.join(map(str, codes))})" if codes else ""
    return _result(action, reply, code, f"{code}: {_MEANINGS[code]}{detail}")


def _rejected(policy: AckPolicy, reply: bytes, text: str) -> DeliveryResult:
    codes = error_codes(text)
    named = ", ".join(f"{c} {ERROR_TEXTS[c].lower()}" if c in ERROR_TEXTS else str(c) for c in codes)
    detail = f"ERR {named}" if codes else "no ERR code"
    if policy.AR != "by_error_code":
        return _result(policy.AR, reply, "AR", f"AR: application reject ({detail})")
    if any(c in policy.ar_error_codes for c in codes):
        return _result("error", reply, "AR", f"AR: rejected for a reason resending cannot fix ({detail})")
    return _result("retry", reply, "AR", f"AR: the receiver could not process it now ({detail})")


def error_codes(text: str) -> list[int]:
    """The table 0357 codes of every ERR segment.

    ERR-3.1 (v2.5+) and ERR-1.4.1 of each repetition (before 2.5).
    """
    if "ERR" not in text:  # most replies: no need to parse
        return []
    try:
        message = Message.parse(text)
    except HL7Error:
        return []
    codes: list[int] = []
    for occurrence, segment in enumerate(message.segments_named("ERR"), start=1):
        values = [message.get(f"ERR[{occurrence}]-3.1")]
        repetitions = segment.field(1).split(message.delimiters.repetition)
        values += [message.get(f"ERR[{occurrence}]-1[{n}].4.1") for n in range(1, len(repetitions) + 1)]
        codes += [int(value) for value in (v.strip() for v in values) if value.isascii() and value.isdigit()]
    return list(dict.fromkeys(codes))


def _result(action: str, reply: bytes | None, code: str, reason: str) -> DeliveryResult:
    return DeliveryResult(_ACTION_OUTCOMES[action], response=reply or None, response_code=code, reason=reason)


def unexpected_failure(failure: Failure, destination: str) -> DeliveryResult:
    """Log a failure no destination expected (a bug) and report RETRY, so the message is kept, not lost."""
    log.failure(
        "destination {destination}: unexpected failure; the delivery will be retried",
        failure,
        destination=destination,
    )
    return unexpected_result(failure)


def unexpected_result(failure: Failure) -> DeliveryResult:
    """The RETRY an unexpected failure is reported as (``unexpected_failure`` without the log)."""
    return DeliveryResult(
        Outcome.RETRY, reason=f"unexpected error: {failure.type.__name__}: {failure.getErrorMessage()}"
    )
