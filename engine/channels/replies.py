"""The pure parts of the intake's answers: the envelope of a batch's ACKs, whom to answer without MSH.

What a sender is told is decided in ``engine.channels.intake``; these only lay it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from engine.hl7.ack import Recipient, Sender
from engine.hl7.batch import Batch
from engine.hl7.dtm import hl7_timestamp
from engine.hl7.message import Delimiters, escape

__all__ = ["batch_reply", "salvage"]


def batch_reply(
    batch: Batch,
    acks: Sequence[str],
    *,
    sender: Sender,
    timestamp: datetime,
    control_id: str,
    delimiters: Delimiters,
) -> str:
    """One frame answering a batch: BHS, the ACKs, BTS (FHS/FTS around them when the batch had them)."""
    d = delimiters
    header_fields = [
        escape(sender.application, d),
        escape(sender.facility, d),
        "",
        "",
        hl7_timestamp(timestamp),
        "",
        "",
        "",
        escape(control_id, d),
        escape(batch.batch_control_id, d),
    ]
    segments = []
    if batch.file_header is not None:
        segments.append(d.field.join(["FHS", d.encoding_chars, *header_fields]))
    segments.append(d.field.join(["BHS", d.encoding_chars, *header_fields]))
    segments.extend(acks)
    segments.append(d.field.join(["BTS", str(len(acks))]))
    if batch.file_header is not None:
        segments.append(d.field.join(["FTS", "1"]))
    return "\r".join(segments)


def salvage(text: str) -> tuple[Recipient, Delimiters]:
    """Best effort for an unreadable header.

    What can still be answered (MSA-2, MSH-5/6), in our delimiters.
    """
    d = Delimiters.DEFAULT
    start = text.find("MSH")
    if start < 0:
        return Recipient(), d
    line = text[start:].replace("\n", "\r").split("\r", 1)[0]
    if len(line) < 4:  # "MSH" alone on its line: no separator to read fields with
        return Recipient(), d
    separator = line[3]
    fields = line.split(separator)

    def get(n: int) -> str:
        # MSH-1 is the separator itself, so MSH-n sits at index n - 1.
        return fields[n - 1] if len(fields) >= n else ""

    return (
        Recipient(
            sending_application=escape(get(3), d),
            sending_facility=escape(get(4), d),
            control_id=escape(get(10), d),
            version="",
        ),
        d,
    )
