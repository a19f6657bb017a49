"""Functions for the ``python:`` escape hatch, imported by name from the transform tests."""

from __future__ import annotations

from engine.errors import TransformError
from engine.hl7.message import Message

NOT_A_FUNCTION = "a string"


def mark_processed(message: Message) -> Message:
    """Set MSH-8 (security) to HATCH and return the same message."""
    message.set("MSH-8", "HATCH")
    return message


def rebuild(message: Message) -> Message:
    """Return a different Message object: the text parsed again, without its last segment."""
    return Message.parse("\r".join(segment.raw for segment in message.segments[:-1]))


def explode(message: Message) -> Message:
    """Fail the way custom code fails."""
    raise KeyError("PID-99")


def refuse(message: Message) -> Message:
    """Refuse the message the way the engine's own transforms do."""
    raise TransformError("PID-7 is in the future")


def forget_to_return(message: Message) -> None:
    """Change the message but return nothing."""
    message.set("MSH-8", "LOST")


class Namespace:
    """Holds a function one attribute deeper than the module."""

    @staticmethod
    def upper_name(message: Message) -> Message:
        """Upper-case PID-5.1."""
        message.set("PID-5.1", message.get("PID-5.1").upper())
        return message
