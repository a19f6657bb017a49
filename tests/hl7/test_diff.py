"""engine.hl7.diff: the field-level difference between two versions of a message."""

from __future__ import annotations

from engine.hl7.diff import Change, diff_messages
from engine.hl7.message import Message

BEFORE = (
    "MSH|^~\\&|PMS|CLINIC|HUB|HUB|20261201||ADT^A04|C1|P|2.5.1\r"
    "PID|1||111^^^PMS^MR~222^^^EMR^MR||DOE^JOHN||19800101|M\r"
    "OBX|1|ST|A||one\r"
    "OBX|2|ST|B||two\r"
    "NTE|1||note"
)


def diff(after: str) -> list[Change]:
    return diff_messages(Message.parse(BEFORE), Message.parse(after), "2.5.1")


def test_unchanged_message_has_no_changes():
    """A message compared with itself has no changes."""
    assert diff(BEFORE) == []


def test_component_change_is_named_by_path_and_names():
    """A changed component is reported at PID-5.1 with the field and component names of the version."""
    after = BEFORE.replace("DOE^JOHN", "SMITH^JOHN")
    assert diff(after) == [Change("PID-5.1", "changed", "DOE", "SMITH", "Patient Name / Family Name")]


def test_repetition_and_segment_occurrence_are_in_the_path():
    """A change in a second repetition says [2]; a change in the second OBX says OBX[2]."""
    after = BEFORE.replace("222^^^EMR", "333^^^EMR").replace("||two", "||TWO")
    changes = diff(after)
    expected = [("PID-3[2].1", "222", "333"), ("OBX[2]-5", "two", "TWO")]
    assert [(c.path, c.old, c.new) for c in changes] == expected
    assert changes[1].name == "Observation Value"


def test_added_and_removed_segments():
    """A segment only the output has is added; one only the input has is removed."""
    after = BEFORE.replace("\rNTE|1||note", "") + "\rZPI|1|extra"
    assert diff(after) == [
        Change("ZPI", "added", "", "ZPI|1|extra"),
        Change("NTE", "removed", "NTE|1||note", ""),
    ]


def test_header_field_changes_are_numbered_like_the_standard():
    """MSH-5 is the fifth field counting the field separator as MSH-1."""
    after = BEFORE.replace("|HUB|HUB|", "|EMR|HUB|")
    assert diff(after) == [Change("MSH-5", "changed", "HUB", "EMR", "Receiving Application")]
