"""Structure transforms on corpus messages: delete, split, join, and adding, removing, renaming segments."""

from __future__ import annotations

from engine.hl7.message import Message
from tests.transforms.steps import PATH, build, failure, run

# --- delete ---------------------------------------------------------------------------------------


def test_delete_a_field_removes_every_repetition(adt):
    """delete PID-3 empties the whole field, both repetitions."""
    assert run(adt, {"delete": {"field": "PID-3"}}).segment("PID").field(3) == ""


def test_delete_a_repetition_moves_the_later_ones_up(adt):
    """delete PID-3[1] leaves the second repetition as the only one."""
    result = run(adt, {"delete": {"field": "PID-3[1]"}})
    assert result.segment("PID").field(3) == "123456789^^^USSSA^SS"


def test_delete_a_component_empties_it(adt):
    """delete PID-5.2 empties the given name and keeps the other components."""
    result = run(adt, {"delete": {"field": "PID-5.2"}})
    assert result.get("PID-5.2") == ""
    assert result.get("PID-5.3") == "A"


def test_delete_what_is_not_there_changes_nothing(adt):
    """An absent segment, repetition or component stays as it was."""
    before = adt.to_text()
    result = run(
        adt,
        {"delete": {"field": "ZPI-1"}},
        {"delete": {"field": "PID-3[5]"}},
        {"delete": {"field": "PID-8.4"}},
    )
    assert result.to_text() == before


def test_delete_in_a_message_with_other_delimiters(odd):
    """delete PID-3[2] uses | as the repetition separator there."""
    result = run(odd, {"delete": {"field": "PID-3[2]"}})
    assert result.segment("PID").field(3) == "11111~~~FOO&&0363~NI~FACILITY ID&200M&L"


# --- segments -------------------------------------------------------------------------------------


def test_add_segment_after_before_and_at_the_end(oru):
    """add_segment goes after the first PID, before the first OBR, or last."""
    result = run(
        oru,
        {"add_segment": {"segment": "ZPI|1|after", "after": "PID"}},
        {"add_segment": {"segment": "ZPB|1|before", "before": "OBR"}},
        {"add_segment": {"segment": "ZEN|1|end"}},
    )
    names = [segment.name for segment in result.segments]
    assert names[:5] == ["MSH", "PID", "ZPI", "ZPB", "OBR"]
    assert names[-1] == "ZEN"
    assert result.get("ZPI-2") == "after"


def test_add_segment_after_a_missing_segment_is_an_error(oru):
    """When the anchor segment is absent the segment is not guessed into place: TransformError."""
    assert failure(oru, {"add_segment": {"segment": "ZPI|1", "after": "PV1"}}) == (
        f"{PATH}[0] (add_segment ZPI after PV1): the message has no PV1 segment to add the segment after"
    )


def test_add_segment_uses_the_message_delimiters(odd):
    """ZPI|1|a^b~c\\F\\d written with default delimiters becomes ZPI^1^a~b|c\\F\\d in the A24's delimiters."""
    result = run(odd, {"add_segment": {"segment": "ZPI|1|a^b~c\\F\\d", "after": "EVN"}})
    assert result.segments[2].raw == "ZPI^1^a~b|c\\F\\d"
    assert (result.get("ZPI-2.2"), result.get("ZPI-2[2]")) == ("b", "c^d")


def test_add_segment_escapes_the_message_delimiters_that_are_plain_text_in_the_spec():
    """In a message with '#' as field separator, a '#' in the segment text is text and gets escaped."""
    message = Message.parse("MSH#^~\\&#A#B#C#D#20260101##ADT^A01#1#P#2.5\rPID#1")
    result = run(message, {"add_segment": {"segment": "ZPI|a#b"}})
    assert result.segments[-1].raw == "ZPI#a\\F\\b"
    assert result.get("ZPI-1") == "a#b"


def test_add_segment_with_a_subcomponent_the_message_cannot_hold_is_an_error():
    """'&' in the segment text needs a subcomponent separator the message does not declare."""
    message = Message.parse("MSH|^~\\|A|B|C|D|20260101||ADT^A01|1|P|2.3\rPID|1")
    assert "no subcomponent separator" in failure(message, {"add_segment": {"segment": "ZPI|a&b"}})


def test_remove_segment_every_occurrence_or_one(oru):
    """remove_segment removes every OBX, or only the third."""
    assert [s.name for s in run(oru, {"remove_segment": {"segment": "OBX"}}).segments] == [
        "MSH",
        "PID",
        "OBR",
        "SPM",
        "OBR",
        "SPM",
    ]
    result = run(Message.parse(oru.to_text()), {"remove_segment": {"segment": "OBX", "occurrence": 3}})
    assert [s.field(1) for s in result.segments_named("OBX")] == ["1", "2", "4", "5", "1", "2", "3", "4", "5"]


def test_remove_an_absent_segment_returns_the_same_message(oru):
    """Nothing to remove: the same Message object comes back."""
    (transform,) = build({"remove_segment": {"segment": "NTE"}})
    assert transform.apply(oru) is oru


def test_rename_segment_renames_every_occurrence(oru):
    """rename_segment SPM to ZSP renames both SPM segments and keeps their fields."""
    result = run(oru, {"rename_segment": {"from": "SPM", "to": "ZSP"}})
    assert [s.name for s in result.segments].count("ZSP") == 2
    assert result.get("ZSP[2]-4") == "BLD"
    assert result.segment("SPM") is None


# --- split / join ---------------------------------------------------------------------------------


def test_split_one_value_into_repetitions(oru):
    """split PID-19 'a;b;;c' gives repetitions a, b, c (empty pieces dropped)."""
    oru.set("PID-19", "a;b;;c")
    result = run(oru, {"split": {"field": "PID-19", "separator": ";"}})
    assert result.segment("PID").field(19) == "a~b~c"


def test_split_keeps_escapes_and_other_repetitions(oru):
    """A piece with an escaped '&' stays escaped; a repetition without the separator is kept as written."""
    oru.set("PID-19[1]", "A&B;C")
    oru.set("PID-19[2]", "D")
    result = run(oru, {"split": {"field": "PID-19", "separator": ";"}})
    assert result.segment("PID").field(19) == "A\\T\\B~C~D"


def test_split_a_field_with_components_is_an_error(adt):
    """Splitting a repetition with components would cut through them: TransformError."""
    adt.set("PID-11.1.2", "a;b")
    assert failure(adt, {"split": {"field": "PID-11", "separator": ";"}}) == (
        f"{PATH}[0] (split PID-11): PID-11 has components; split works on fields of single values"
    )


def test_join_repetitions_into_one_value(oru):
    """join PID-19 a~~b with '; ' gives 'a; b'; a separator with '^' is escaped."""
    oru.set("PID-19[1]", "a")
    oru.set("PID-19[3]", "b")
    assert run(oru, {"join": {"field": "PID-19", "separator": "; "}}).get("PID-19") == "a; b"
    assert run(oru, {"join": {"field": "PID-19", "separator": "^"}}).segment("PID").field(19) == "a\\S\\b"


def test_join_with_components_is_an_error(adt):
    """PID-3 repetitions have components; join refuses rather than merge them."""
    assert "PID-3 has components" in failure(adt, {"join": {"field": "PID-3", "separator": ";"}})


def test_split_and_join_in_a_message_with_other_delimiters(odd):
    """In the A24, | is the repetition separator: split writes it, join reads it."""
    odd.set("PID-19", "x;y")
    result = run(odd, {"split": {"field": "PID-19", "separator": ";"}})
    assert result.segment("PID").field(19) == "x|y"
    assert run(result, {"join": {"field": "PID-19", "separator": "+"}}).get("PID-19") == "x+y"


def test_split_and_join_of_an_absent_field_change_nothing(oru):
    """No segment or no repetitions: the same Message comes back."""
    for spec in (
        {"split": {"field": "ZPI-1", "separator": ";"}},
        {"join": {"field": "PID-19", "separator": ";"}},
    ):
        (transform,) = build(spec)
        assert transform.apply(oru) is oru
