"""Acknowledgements: the one pure function that builds every ACK the engine sends, and the reading of replies.

The clock and the control id are passed in, so tests compare whole ACKs. Which code to send
(AA/AE/AR in original mode, CA/CE/CR in enhanced mode) is decided by the caller; this module
only lays the segments out the way the sender's version expects (docs/hl7.md §5). A reply we get
(from a destination, or by the command line client) is read for its MSA alone (``read_reply``).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from engine.hl7.dtm import hl7_timestamp
from engine.hl7.header import Header
from engine.hl7.message import Delimiters, escape, escape_breaks

#: HL7 table 0357, message error condition codes.
ERROR_TEXTS = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

#: Original-mode code -> enhanced-mode (accept acknowledgement) code.
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR entry: a table 0357 code, a readable text and where in the message (ERR-2)."""

    code: int
    text: str
    location: tuple = ()
    severity: str = "E"


@dataclass(slots=True)
class Recipient:
    """Who the ACK goes to and what it answers.

    Read-only by convention: one is made for every message, and a frozen dataclass costs more.
    """

    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    trigger_event: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""

    @classmethod
    def of(cls, header: Header) -> Recipient:
        """The recipient described by a readable header (raw fields, in the sender's encoding)."""
        return cls(
            header.sending_application,
            header.sending_facility,
            header.control_id,
            header.trigger_event,
            header.field(11),
            header.version,
            header.field(18),
        )


@dataclass(frozen=True, slots=True)
class Sender:
    """Our side of the ACK: MSH-3/MSH-4, and the version used when the sender gave none."""

    application: str
    facility: str
    default_version: str = "2.5.1"


class ControlIds:
    """Fresh MSH-10 values: unique across restarts (time-based prefix) and within a process (counter)."""

    def __init__(self, prefix: str | None = None):
        self._prefix = prefix if prefix is not None else f"{int(time.time()):x}{os.getpid() % 4096:03x}"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):06d}"


def is_enhanced(header: Header) -> bool:
    """True when MSH-15 or MSH-16 is valued: the sender asked for enhanced acknowledgement mode."""
    return bool(header.accept_ack_type or header.application_ack_type)


def build_ack(
    recipient: Recipient,
    code: str,
    *,
    sender: Sender,
    control_id: str,
    timestamp: datetime,
    delimiters: Delimiters = Delimiters.DEFAULT,
    errors: Sequence[AckError] = (),
) -> str:
    """Build an ACK (segments joined by CR, no trailing CR) answering ``recipient`` with ``code``.

    MSH-3/4 are ours, MSH-5/6 the sender's MSH-3/4 (raw, so they must be in ``delimiters``),
    MSH-9 ``ACK^<trigger>^ACK`` (component 3 from 2.5 on), MSH-11/12/18 echoed, MSA-2 the
    received control id. Echoed fields keep their delimiters but never a CR, LF, VT or FS
    (``escape_breaks``): nothing a sender wrote can end a segment or the reply's MLLP block.
    ERR follows the version: ERR-1 (ELD) before 2.5, ERR-2..8 from 2.5.
    """
    if not errors:
        # The common answer: everything but our timestamp and control ids repeats per sender, so
        # its text is laid out once (by the general path below) and reused.
        template = _ack_template(
            recipient.sending_application,
            recipient.sending_facility,
            recipient.trigger_event,
            recipient.processing_id,
            recipient.version,
            recipient.charset,
            code,
            sender,
            delimiters,
        )
        if template is not None:
            head, middle, tail = template
            return (
                f"{head}{hl7_timestamp(timestamp)}{middle}"
                f"{escape(control_id, delimiters)}{tail}{escape_breaks(recipient.control_id, delimiters)}"
            )
    return _layout(recipient, code, sender, control_id, hl7_timestamp(timestamp), delimiters, errors)


# Stand-ins for the per-message parts of a cached ACK template: none of them can occur in a real ACK.
_TIMESTAMP_MARK = "\x00T\x00"
_CONTROL_ID_MARK = "\x00C\x00"
_RECEIVED_ID_MARK = "\x00R\x00"


@lru_cache(maxsize=1024)
def _ack_template(
    sending_application: str,
    sending_facility: str,
    trigger_event: str,
    processing_id: str,
    version: str,
    charset: str,
    code: str,
    sender: Sender,
    delimiters: Delimiters,
) -> tuple[str, str, str] | None:
    """An error-free ACK cut around its timestamp, its control id and MSA-2: (head, middle, tail).

    None when the fields themselves hold a NUL (the stand-ins could not be found again): such an
    ACK is laid out in full every time.
    """
    if (
        "\x00"
        in f"{sending_application}{sending_facility}{trigger_event}{processing_id}{version}{charset}{code}"
        f"{sender.application}{sender.facility}"
    ):
        return None
    recipient = Recipient(
        sending_application,
        sending_facility,
        _RECEIVED_ID_MARK,
        trigger_event,
        processing_id,
        version,
        charset,
    )
    text = _layout(recipient, code, sender, _CONTROL_ID_MARK, _TIMESTAMP_MARK, delimiters, ())
    head, rest = text.split(_TIMESTAMP_MARK)
    middle, rest = rest.split(_CONTROL_ID_MARK)
    tail, after = rest.split(_RECEIVED_ID_MARK)
    return (head, middle, tail) if not after else None


def _layout(
    recipient: Recipient,
    code: str,
    sender: Sender,
    control_id: str,
    timestamp: str,
    delimiters: Delimiters,
    errors: Sequence[AckError],
) -> str:
    d = delimiters
    version = recipient.version or sender.default_version
    release = _release(version)
    old_layout = release < (2, 5)
    trigger = escape_breaks(recipient.trigger_event, d)
    if release < (2, 2):
        message_type = "ACK"
    elif trigger and not old_layout:
        message_type = d.component.join(("ACK", trigger, "ACK"))
    elif trigger:
        message_type = d.component.join(("ACK", trigger))
    else:
        message_type = "ACK"

    msh = [
        "MSH",
        d.encoding_chars,
        escape(sender.application, d),
        escape(sender.facility, d),
        escape_breaks(recipient.sending_application, d),
        escape_breaks(recipient.sending_facility, d),
        timestamp,
        "",
        message_type,
        escape(control_id, d),
        escape_breaks(recipient.processing_id, d),
        escape(version, d),
    ]
    if recipient.charset:
        msh += ["", "", "", "", "", escape_breaks(recipient.charset, d)]
    segments = [d.field.join(msh)]

    msa = ["MSA", code, escape_breaks(recipient.control_id, d)]
    if errors and old_layout:
        msa.append(escape(errors[0].text, d))
    segments.append(d.field.join(msa))

    if errors:
        if old_layout:
            segments.append(d.field.join(("ERR", d.repetition.join(_eld(e, d) for e in errors))))
        else:
            segments.extend(_err_segment(e, d) for e in errors)
    return "\r".join(segments)


@lru_cache(maxsize=64)
def _release(version: str) -> tuple[int, ...]:
    """'2.3.1' -> (2, 3, 1); anything unreadable counts as current (the 2.5+ layout)."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (2, 5)


def _coded(error: AckError, separator: str, d: Delimiters) -> str:
    return separator.join((str(error.code), escape(ERROR_TEXTS.get(error.code, ""), d), "HL70357"))


def _eld(error: AckError, d: Delimiters) -> str:
    """ERR-1 of v2.1-2.4: segment ^ sequence ^ field ^ code&text&HL70357."""
    location = list(error.location[:3]) + [""] * (3 - len(error.location[:3]))
    parts = [escape(str(p), d) for p in location]
    sub = d.subcomponent or d.component
    parts.append(_coded(error, sub, d))
    return d.component.join(parts)


def _err_segment(error: AckError, d: Delimiters) -> str:
    """ERR of v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message."""
    location = d.component.join(escape(str(p), d) for p in error.location)
    fields = [
        "ERR",
        "",
        location,
        _coded(error, d.component, d),
        error.severity,
        "",
        "",
        "",
        escape(error.text, d),
    ]
    return d.field.join(fields)


# The first non-empty segment, when it is an MSH: its field separator.
_HEADER = re.compile(r"[\r\n]*MSH([^\r\n])")
_SEGMENT_END = re.compile(r"[\r\n]")


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back for one message: the ACK code (MSA-1), the control id it answers (MSA-2), the text."""

    code: str
    control_id: str
    text: str

    @property
    def positive(self) -> bool:
        """AA or CA: the receiver took responsibility for the message."""
        return self.code in ("AA", "CA")


def parse_reply(payload: bytes, encoding: str = "utf-8") -> Reply:
    """Read MSA-1 and MSA-2 from a reply; a reply without MSA gives code ''."""
    return read_reply(payload.decode(encoding, errors="replace"))


def read_reply(text: str) -> Reply:
    """``parse_reply`` of a reply already decoded.

    The field separator is the first segment's fourth character when that segment is an MSH,
    '|' otherwise; segments end at CR, LF or CRLF. Only the first segment and the MSA are read,
    without splitting the rest: a downstream ACK is read for every message sent.
    """
    header = _HEADER.match(text)
    separator = header.group(1) if header else "|"
    msa = "MSA" + separator
    start = text.find(msa)
    while start > 0 and text[start - 1] not in "\r\n":  # not at the start of a segment
        start = text.find(msa, start + 1)
    if start < 0:
        return Reply(code="", control_id="", text=text)
    end = _SEGMENT_END.search(text, start)
    fields = text[start : end.start() if end else len(text)].split(separator, 3)
    return Reply(code=fields[1], control_id=fields[2] if len(fields) > 2 else "", text=text)
