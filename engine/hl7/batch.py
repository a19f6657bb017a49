"""HL7 batches ``[FHS] {[BHS] {MSH ...} [BTS]} [FTS]`` and back-to-back messages, split apart.

Each member message is returned as text (segments joined with CR) to be read and validated on
its own, like a message that arrived alone (docs/hl7.md §6). The envelope is checked only for
what makes splitting unsafe: segments outside any message, a second FHS, a BHS inside an open
batch, anything after FTS, and envelope segments written with another field separator than the
messages. Each message keeps its own MSH-2, so encoding characters may differ; a BTS-1 count
that differs from the messages found is reported in ``declared_count``, not rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import HL7Error
from engine.hl7.message import Delimiters, split_segments

__all__ = ["Batch", "looks_like_batch", "split_batch"]


@dataclass(frozen=True, slots=True)
class Batch:
    """The messages of a batch or file, with its envelope."""

    file_header: str | None
    batch_header: str | None
    messages: tuple[str, ...]
    batch_control_id: str
    declared_count: int | None
    delimiters: Delimiters | None


def looks_like_batch(text: str) -> bool:
    """True when text starts with FHS/BHS, holds a BTS, or holds more than one segment starting with MSH.

    A trailing FTS alone does not make a batch: senders leave stray FTS lines after one message.
    """
    stripped = text.lstrip()
    # Each search is a scan of the whole text: those for a line feed only when there is one.
    line_feeds = "\n" in text
    if stripped.startswith(("FHS", "BHS")) or "\rBTS" in text or (line_feeds and "\nBTS" in text):
        return True
    offset = len(text) - len(stripped)
    found = 1 if stripped.startswith("MSH") else 0
    for marker in ("\rMSH", "\nMSH") if line_feeds else ("\rMSH",):
        position = text.find(marker, offset)
        while position >= 0:
            found += 1
            if found > 1:
                return True
            position = text.find(marker, position + 1)
    return False


def _header_field(segment: str, n: int) -> str:
    """Field n (n >= 2) of an FHS/BHS segment, whose field 1 is the separator itself."""
    fields = segment[4:].split(segment[3], n - 1)
    return fields[n - 2] if n - 2 < len(fields) else ""


def _sequence_error(text: str, segment: str) -> HL7Error:
    return HL7Error(text, code=100, location=(segment[:3],))


def split_batch(text: str) -> Batch:
    """Split a batch, a file or back-to-back messages into member messages.

    Raises HL7Error 100 for a bad envelope sequence and 102 for unusable or mixed delimiters.
    """
    file_header = batch_header = None
    envelope: Delimiters | None = None
    messages: list[str] = []
    current: list[str] | None = None
    in_batch = file_closed = False
    declared: int | None = None

    def close_message() -> None:
        """End the message being collected, if any."""
        nonlocal current
        if current is not None:
            messages.append("\r".join(current))
            current = None

    for segment in split_segments(text.lstrip()):
        kind = segment[:3]
        if file_closed:
            if segment.isspace():
                continue
            raise _sequence_error(f"{kind} segment after the file trailer (FTS)", segment)
        if kind == "MSH":
            close_message()
            if envelope is not None and segment[3:4] != envelope.field:
                raise HL7Error(
                    f"message uses field separator {segment[3:4]!r} inside a batch or file that uses "
                    f"{envelope.field!r}",
                    code=102,
                    location=("MSH", 1, 1),
                )
            current = [segment]
        elif kind == "FHS":
            if file_header is not None:
                raise _sequence_error("File cannot have more than one FHS segment", segment)
            if messages or current is not None or batch_header is not None:
                raise _sequence_error("FHS must be the first segment of a file", segment)
            envelope = Delimiters.from_header_segment(segment)
            file_header = segment
        elif kind == "BHS":
            if in_batch:
                raise _sequence_error(
                    "Batch cannot have more than one BHS segment (no BTS before this BHS)", segment
                )
            close_message()
            delimiters = Delimiters.from_header_segment(segment)
            if envelope is not None and delimiters.field != envelope.field:
                raise HL7Error(
                    f"BHS uses field separator {delimiters.field!r}"
                    f" inside a file that uses {envelope.field!r}",
                    code=102,
                    location=("BHS", 1, 1),
                )
            envelope = envelope or delimiters
            batch_header = batch_header or segment
            in_batch = True
        elif kind in ("BTS", "FTS"):
            close_message()
            in_batch = False
            if kind == "FTS":
                file_closed = True
            else:
                count = segment[4:].split(segment[3], 1)[0] if len(segment) > 3 else ""
                if count.isascii() and count.isdigit():
                    declared = (declared or 0) + int(count)
        elif current is None:
            raise _sequence_error(f"Segment received before message header: {kind}", segment)
        else:
            current.append(segment)
    close_message()

    if not messages and file_header is None and batch_header is None:
        raise HL7Error("no FHS, BHS or MSH segment: not a batch", code=100, location=("MSH",))
    control_id = ""
    if batch_header is not None:
        control_id = _header_field(batch_header, 11)
    if not control_id and file_header is not None:
        control_id = _header_field(file_header, 11)
    return Batch(file_header, batch_header, tuple(messages), control_id, declared, envelope)
