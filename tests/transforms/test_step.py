"""engine/transforms/step.py: what every transform step shares: its name in errors, and how it writes."""

from __future__ import annotations

import pytest

from engine.errors import HL7Error, TransformError
from engine.hl7.message import Message
from engine.transforms.step import Step, with_field, write

TEXT = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X~Y||DOE^JANE"


class Failing(Step):
    """A step that fails with the error it is given."""

    def __init__(self, error: Exception):
        super().__init__("channels[0].transforms[3]", "map PV1-3.1")
        self.failure = error

    def _apply(self, message: Message) -> Message:
        raise self.failure


@pytest.mark.parametrize("error", [ValueError("no such field"), HL7Error("no such field")])
def test_a_step_that_cannot_write_raises_a_transform_error_naming_it(error):
    """What Message.set refuses (ValueError, HL7Error) is a TransformError naming the step, caused by it."""
    with pytest.raises(TransformError) as raised:
        Failing(error).apply(Message.parse(TEXT))
    assert str(raised.value) == "channels[0].transforms[3] (map PV1-3.1): no such field"
    assert raised.value.__cause__ is error
    assert repr(Failing(error)) == "<Transform channels[0].transforms[3] (map PV1-3.1)>"


def test_any_other_error_is_a_bug_and_passes_through():
    """A step's own bug is not turned into a message error."""
    with pytest.raises(KeyError):
        Failing(KeyError("PID-99")).apply(Message.parse(TEXT))


def test_writing_nothing_where_there_is_nothing_adds_nothing():
    """write(''): no segment and no delimiters are added for an empty value; a value there is cleared."""
    message = Message.parse(TEXT)
    write(message, "ZZZ-1", "")
    assert message.to_text() == Message.parse(TEXT).to_text()
    write(message, "PID-5.2", "")
    write(message, "ZZZ-1", "new")
    assert (message.get("PID-5.1"), message.get("PID-5.2"), message.get("ZZZ-1")) == ("DOE", "", "new")


def test_with_field_rebuilds_the_message_around_a_whole_field():
    """A field with all its repetitions is replaced, missing fields padded; the message given is unchanged."""
    message = Message.parse(TEXT)
    replaced = with_field(message, message.segment("PID"), 3, "A~B~C")
    padded = with_field(message, message.segment("PID"), 8, "F")
    assert replaced.segment("PID").raw == "PID|1||A~B~C||DOE^JANE"
    assert padded.segment("PID").raw == "PID|1||X~Y||DOE^JANE|||F"
    assert message.to_text() == Message.parse(TEXT).to_text()


def test_with_field_numbers_msh_fields_as_the_standard_does():
    """MSH-1 is the field separator itself: MSH-3 is the third field, as Message.get reads it."""
    message = Message.parse(TEXT)
    changed = with_field(message, message.segment("MSH"), 3, "APP")
    assert (changed.get("MSH-3"), changed.get("MSH-4"), changed.segment("MSH").raw[:14]) == (
        "APP",
        "B",
        "MSH|^~\\&|APP|B",
    )
