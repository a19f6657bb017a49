"""What every transform step shares: its name and error wrapping, and the two ways it changes a message.

A step writes a value through ``Message.set`` (``write``), or, for a change ``Message`` has no
method for (a whole field with all its repetitions), rebuilds the message around the new field
text (``with_field``).
"""

from __future__ import annotations

from engine.errors import HL7Error, TransformError
from engine.hl7.message import Message, Segment

__all__ = ["Step", "with_field", "write"]


class Step:
    """What every transform shares: its name (YAML path), a label for errors, and error wrapping."""

    __slots__ = ("name", "_label")

    def __init__(self, name: str, label: str):
        self.name = name
        self._label = label

    def __repr__(self) -> str:
        return f"<Transform {self.name} ({self._label})>"

    def error(self, reason: str) -> TransformError:
        """A TransformError naming this transform: ``channels[0].transforms[3] (map PV1-3.1): reason``."""
        return TransformError(f"{self.name} ({self._label}): {reason}")

    def apply(self, message: Message) -> Message:
        """The transformed message (often the same object, changed). Raises TransformError."""
        try:
            return self._apply(message)
        except (ValueError, HL7Error) as exc:  # Message.set cannot write this value into this message
            raise self.error(str(exc)) from exc

    def _apply(self, message: Message) -> Message:
        raise NotImplementedError


def write(message: Message, path: str, value: str) -> None:
    """``Message.set``, except that writing '' where there is nothing adds no segment or delimiters."""
    if value or message.get(path):
        message.set(path, value)


def with_field(message: Message, segment: Segment, number: int, raw: str) -> Message:
    """A new message in which field ``number`` of ``segment`` is the (escaped) text ``raw``."""
    separator = message.delimiters.field
    fields = segment.fields
    fields.extend([""] * (number + 1 - len(fields)))
    fields[number] = raw
    # fields[1] of MSH/FHS/BHS is the field separator itself, not text between separators.
    text = fields[0] + separator + separator.join(fields[2:] if segment.is_header else fields[1:])
    return Message(
        message.delimiters, [text if other is segment else other.raw for other in message.segments]
    )
