"""A message as a table for people: each segment's fields with their names, repetitions and components.

``message_table(text, version)`` reads ER7 text (already decoded per MSH-18) and names every
field and component from the message's version (engine.hl7.names). Values are unescaped for
reading; the text itself stays the exact record. It never raises: text that is no message
(an answer that is not HL7, an error) gives no segments.
"""

from __future__ import annotations

from engine.errors import HL7Error
from engine.hl7.message import Delimiters, Message, unescape
from engine.hl7.names import component_name, field_name

__all__ = ["message_table"]


def message_table(text: str | None, version: str) -> list[dict]:
    """The segments of ``text`` in order, each ``{"segment", "fields"}``; [] when it is no HL7 message.

    Names are those of the version ``text``'s MSH-12 gives, else of ``version``.

    A field is ``{"position", "name", "value", "repetitions"}`` (only fields with a value);
    ``repetitions`` is a list of component lists, each component ``{"position", "name", "value"}``,
    given when the field has more than one repetition or component (else []).
    """
    if not text:
        return []
    try:
        message = Message.parse(text.lstrip("\ufeff"))
    except HL7Error:
        return []
    delimiters = message.delimiters
    version = message.get("MSH-12.1") or version  # what was sent may be of another version
    table = []
    for segment in message.segments:
        fields = []
        for position, value in enumerate(segment.fields[1:], start=1):
            if not value:
                continue
            header_field = segment.is_header and position <= 2
            fields.append(
                {
                    "position": position,
                    "name": field_name(version, segment.name, position),
                    "value": value if header_field else _leaf(value, delimiters),
                    "repetitions": (
                        []
                        if header_field
                        else _repetitions(value, delimiters, version, segment.name, position)
                    ),
                }
            )
        table.append({"segment": segment.name, "fields": fields})
    return table


def _leaf(value: str, delimiters: Delimiters) -> str:
    """A value unescaped when it is one leaf, else as written (delimiters and escapes kept)."""
    parted = delimiters.repetition in value or delimiters.component in value
    return value if parted else unescape(value, delimiters)


def _repetitions(
    value: str, delimiters: Delimiters, version: str, segment: str, field: int
) -> list[list[dict]]:
    repetitions = value.split(delimiters.repetition)
    if len(repetitions) == 1 and delimiters.component not in value:
        return []
    return [
        [
            {
                "position": position,
                "name": component_name(version, segment, field, position),
                "value": unescape(component, delimiters),
            }
            for position, component in enumerate(repetition.split(delimiters.component), start=1)
            if component
        ]
        for repetition in repetitions
    ]
