"""Transforms on corpus messages: every kind, escapes, other delimiters, errors that name the transform."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings

from engine.errors import ConfigError, HL7Error, TransformError
from engine.hl7.message import Message
from engine.transforms.lookup import LookupTable
from engine.transforms.spec import TransformSpec
from engine.transforms.transforms import build_transforms, check_transforms
from tests.transforms.messages import hl7_texts

PATH = "channels[0].transforms"
LOCATIONS = LookupTable(
    "locations", {"HUH AE OMU&9.8&ISO": "unused", "OMU B": "WARD-B", "": "NO-WARD", "A^B": "x"}
)


def build(*specs: dict, tables: dict | None = None) -> list:
    """Transforms built from YAML-shaped dicts, named channels[0].transforms[i]."""
    return build_transforms(
        [TransformSpec.model_validate(spec) for spec in specs], path=PATH, tables=tables or {}
    )


def run(message: Message, *specs: dict, tables: dict | None = None) -> Message:
    """The message after every transform, applied in order."""
    for transform in build(*specs, tables=tables):
        message = transform.apply(message)
    return message


def segment_text(message: Message, name: str, occurrence: int = 1) -> str:
    """The raw text of one segment."""
    return message.segment(name, occurrence).raw


def failure(message: Message, spec: dict, tables: dict | None = None) -> str:
    """The TransformError text one transform raises on this message."""
    (transform,) = build(spec, tables=tables)
    with pytest.raises(TransformError) as caught:
        transform.apply(message)
    return str(caught.value)


# --- set ------------------------------------------------------------------------------------------


def test_set_writes_a_value_and_the_transforms_run_in_order(adt):
    """set writes MSH-5; a later copy sees the value an earlier set wrote."""
    result = run(adt, {"set": {"field": "MSH-5", "value": "EMR"}}, {"copy": {"from": "MSH-5", "to": "MSH-6"}})
    assert (result.get("MSH-5"), result.get("MSH-6")) == ("EMR", "EMR")


def test_set_escapes_delimiters_in_the_value(adt):
    """A value with | ^ & ~ \\ is escaped in the text and read back unchanged."""
    result = run(adt, {"set": {"field": "PID-8", "value": "a|b^c&d~e\\f"}})
    assert segment_text(result, "PID").split("|")[8] == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert result.get("PID-8") == "a|b^c&d~e\\f"


def test_set_empty_and_hl7_null(adt):
    """value '' empties the field; value '""' writes the HL7 null as two double quotes."""
    assert run(adt, {"set": {"field": "PID-8", "value": ""}}).get("PID-8") == ""
    result = run(adt, {"set": {"field": "PID-8", "value": '""'}})
    assert segment_text(result, "PID").split("|")[8] == '""'


def test_set_empty_on_an_absent_segment_adds_nothing(adt):
    """Emptying what is not there leaves the message text unchanged."""
    before = adt.to_text()
    assert (
        run(
            adt, {"set": {"field": "ZPI-3.2", "value": ""}}, {"set": {"field": "PID-2.20", "value": ""}}
        ).to_text()
        == before
    )


def test_set_adds_a_missing_segment_at_the_end(adt):
    """Setting a field of a segment the message lacks appends that segment."""
    result = run(adt, {"set": {"field": "ZPI-2", "value": "x"}})
    assert result.segments[-1].raw == "ZPI||x"


def test_set_msh_fields_and_version(adt):
    """MSH-9.2 and set_version (MSH-12.1) are plain writes into MSH; the other MSH fields stay."""
    result = run(adt, {"set": {"field": "MSH-9.2", "value": "A08"}}, {"set_version": "2.5.1"})
    assert (result.get("MSH-9"), result.get("MSH-12"), result.get("MSH-10")) == (
        "ADT^A08^ADT_A01",
        "2.5.1",
        "MSG00001",
    )
    assert segment_text(result, "MSH").startswith("MSH|^~\\&|ADTApp|")


def test_set_version_keeps_the_other_vid_components(adt):
    """MSH-12 2.8^USA becomes 2.5.1^USA."""
    adt.set("MSH-12.2", "USA")
    assert run(adt, {"set_version": "2.5.1"}).get("MSH-12") == "2.5.1^USA"


def test_set_in_a_message_with_other_delimiters(odd):
    """In a message where | repeats and ^ separates fields, a value with | ^ ~ is escaped by those roles."""
    result = run(odd, {"set": {"field": "PID-8", "value": "a|b^c~d"}})
    assert segment_text(result, "PID").split("^")[8] == "a\\R\\b\\F\\c\\S\\d"
    assert result.get("PID-8") == "a|b^c~d"


def test_a_subcomponent_without_a_separator_is_a_transform_error():
    """Writing a second subcomponent where MSH-2 declares none raises TransformError naming the transform."""
    message = Message.parse("MSH|^~\\|A|B|C|D|20260101||ADT^A01|1|P|2.3\rPID|1")
    assert failure(message, {"set": {"field": "PID-3.1.2", "value": "x"}}) == (
        f"{PATH}[0] (set PID-3.1.2): cannot set 'PID-3.1.2': the message has no subcomponent separator"
    )


# --- copy -----------------------------------------------------------------------------------------


def test_copy_a_component_into_a_field(adt):
    """copy PID-3[2].1 to PID-2 replaces PID-2's first repetition with that one value."""
    result = run(adt, {"copy": {"from": "PID-3[2].1", "to": "PID-2"}})
    assert segment_text(result, "PID").split("|")[2] == "123456789"


def test_copy_keeps_escaped_characters(adt):
    """A copied value with \\T\\ stays escaped the same way in its new place."""
    result = run(adt, {"copy": {"from": "PV1-14", "to": "PV1-15"}})
    assert segment_text(result, "PV1").split("|")[15] == "NHS Provider-General (inc.A\\T\\E-this Hosp)"


def test_copy_a_composite_value_to_a_field_keeps_its_structure(adt):
    """copy PID-5 (a name with components and subcomponents) to NK1-2[2] writes the same raw text."""
    result = run(adt, {"copy": {"from": "PID-5", "to": "NK1-2[2]"}})
    assert result.get("NK1-2[2].1.5") == "Aniston"
    assert result.segment("NK1").field(2) == "Evan&&&&Aniston^ADAM^A^III^Dr.^MD^D~" + adt.get("PID-5")


def test_copy_a_composite_value_into_a_component_is_an_error(adt):
    """A value with components cannot become one component: TransformError, nothing escaped into a literal."""
    assert failure(adt, {"copy": {"from": "PID-3.4", "to": "PID-2.4"}}) == (
        f"{PATH}[0] (copy PID-3.4 to PID-2.4): PID-3.4 has components inside; copy it to a whole field"
        " or repetition such as PID-2, or copy one component"
    )


def test_copy_a_composite_value_into_an_absent_segment(adt):
    """The target segment is added when the value is copied into a field of a segment the message lacks."""
    result = run(adt, {"copy": {"from": "PID-3[2]", "to": "ZPI-1"}})
    assert result.segments[-1].raw == "ZPI|123456789^^^USSSA^SS"


def test_copy_of_an_absent_value_empties_the_target(adt):
    """Copying from a field that is empty empties the target; from nothing to nothing adds nothing."""
    result = run(
        adt, {"copy": {"from": "PID-99", "to": "PID-8"}}, {"copy": {"from": "PID-99", "to": "ZPI-1"}}
    )
    assert result.get("PID-8") == ""
    assert result.segment("ZPI") is None


def test_copy_between_messages_with_other_delimiters(odd):
    """copy works with the message's own delimiters (^ field, ~ component, | repetition)."""
    result = run(odd, {"copy": {"from": "PID-3.4", "to": "PID-2"}})
    assert segment_text(result, "PID").split("^")[2] == "FOO&&0363"


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


# --- map ------------------------------------------------------------------------------------------


def test_map_replaces_a_value_found_in_the_table(adt):
    """PV1-3.2 OMU B maps to WARD-B."""
    assert (
        run(adt, {"map": {"field": "PV1-3.2", "table": "locations"}}, tables={"locations": LOCATIONS}).get(
            "PV1-3.2"
        )
        == "WARD-B"
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"on_miss": "keep"}, "Bed 03"), ({"on_miss": "default", "default": "UNKNOWN"}, "UNKNOWN")],
)
def test_map_on_miss_keep_and_default(adt, options, expected):
    """A value the table lacks is kept, or replaced by the default."""
    spec = {"map": {"field": "PV1-3.3", "table": "locations", **options}}
    assert run(adt, spec, tables={"locations": LOCATIONS}).get("PV1-3.3") == expected


def test_map_on_miss_error_is_the_default_and_names_the_value(adt):
    """Without on_miss, a miss raises TransformError with the transform's path, the value and the table."""
    spec = {"map": {"field": "PV1-3.3", "table": "locations"}}
    assert (
        failure(adt, spec, {"locations": LOCATIONS})
        == f"{PATH}[0] (map PV1-3.3): no entry for 'Bed 03' in table locations"
    )


def test_map_an_empty_value_only_through_an_entry_for_it(adt):
    """An empty value is never a miss: mapped when the table has an entry for '', else left empty."""
    tables = {"locations": LOCATIONS, "strict": LookupTable("strict", {"X": "Y"})}
    result = run(
        adt,
        {"map": {"field": "PV1-3.5", "table": "locations"}},
        {"map": {"field": "PV1-2.2", "table": "strict"}},
        tables=tables,
    )
    assert (result.get("PV1-3.5"), result.get("PV1-2.2")) == ("NO-WARD", "")


def test_map_never_adds_a_segment(adt):
    """A map of a field in an absent segment does nothing, even with an entry for ''."""
    result = run(adt, {"map": {"field": "ZPI-1", "table": "locations"}}, tables={"locations": LOCATIONS})
    assert result.segment("ZPI") is None


def test_map_looks_up_the_unescaped_value_and_escapes_the_entry(adt):
    """A key with '^' matches the value written A\\S\\B; an entry with '^' is written escaped."""
    adt.set("PV1-3.3", "A^B")
    tables = {"t": LookupTable("t", {"A^B": "C^D"})}
    result = run(adt, {"map": {"field": "PV1-3.3", "table": "t"}}, tables=tables)
    assert result.get("PV1-3.3") == "C^D"
    assert "C\\S\\D" in segment_text(result, "PV1")


def test_map_of_a_part_with_components_is_an_error(adt):
    """PV1-3.1 has subcomponents; map asks for one of them instead of looking up raw text."""
    assert failure(adt, {"map": {"field": "PV1-3.1", "table": "locations"}}, {"locations": LOCATIONS}) == (
        f"{PATH}[0] (map PV1-3.1): PV1-3.1 has components inside; name one of them, e.g. PV1-3.1.1"
    )


def test_a_table_missing_at_build_time_is_a_config_error():
    """build_transforms with a table name check_transforms would reject raises ConfigError."""
    with pytest.raises(
        ConfigError, match=r"channels\[0\]\.transforms\[0\]\.map\.table: no table named 'nope'"
    ):
        build({"map": {"field": "PV1-3.1", "table": "nope"}})


# --- replace / case / trim ------------------------------------------------------------------------


def test_replace_substitutes_every_match(adt):
    """replace collapses every run of spaces and can use groups in with."""
    adt.set("PID-5.1.1", "  van   der  Berg ")
    result = run(
        adt,
        {"replace": {"field": "PID-5.1.1", "pattern": r"\s+", "with": " "}},
        {"replace": {"field": "PID-5.2", "pattern": "^(A)(DAM)$", "with": r"\2\1"}},
    )
    assert (result.get("PID-5.1.1"), result.get("PID-5.2")) == (" van der Berg ", "DAMA")


def test_a_transform_that_changes_nothing_leaves_the_text_alone(adt):
    """replace without a match and trim of a trimmed value keep escapes exactly as they were."""
    before = adt.to_text()
    result = run(
        adt,
        {"replace": {"field": "PV1-14", "pattern": "zzz", "with": "y"}},
        {"trim": {"field": "PV1-14"}},
        {"case": {"field": "PID-8", "to": "upper"}},
    )
    assert result.to_text() == before


@pytest.mark.parametrize(
    ("to", "expected"), [("upper", "ANN ARBOR "), ("lower", "ann arbor "), ("title", "Ann Arbor ")]
)
def test_case(adt, to, expected):
    """case: upper, lower and title of PID-11.3 'Ann Arbor '."""
    assert run(adt, {"case": {"field": "PID-11.3", "to": to}}).get("PID-11.3") == expected


def test_trim_removes_surrounding_whitespace(adt):
    """trim strips the trailing space of PID-11.3 'Ann Arbor '."""
    assert run(adt, {"trim": {"field": "PID-11.3"}}).get("PID-11.3") == "Ann Arbor"


def test_case_of_an_escaped_value_keeps_the_escape(adt):
    """Upper-casing PV1-14 writes the '&' as \\T\\ again."""
    result = run(adt, {"case": {"field": "PV1-14", "to": "upper"}})
    assert segment_text(result, "PV1").split("|")[14] == "NHS PROVIDER-GENERAL (INC.A\\T\\E-THIS HOSP)"


# --- date -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "options", "expected"),
    [
        ("198808181126+0215", {"from": "hl7", "to": "%Y-%m-%d"}, "1988-08-18"),
        ("198808181126+0215", {"from": "hl7", "to": "%d.%m.%Y %H:%M %z"}, "18.08.1988 11:26 +0215"),
        ("198808181126+0215", {"from": "hl7", "to": "hl7"}, "198808181126+0215"),
        ("20210817151943.4+0200", {"from": "hl7", "to": "hl7"}, "20210817151943.4+0200"),
        ("08/18/1988", {"from": "%m/%d/%Y", "to": "hl7"}, "19880818"),
        ("1988-08-18 11:26", {"from": "%Y-%m-%d %H:%M", "to": "hl7"}, "198808181126"),
        (
            "1988-08-18T11:26:05.123456+0130",
            {"from": "%Y-%m-%dT%H:%M:%S.%f%z", "to": "hl7"},
            "19880818112605.1234+0130",
        ),
        ("18.08.88", {"from": "%d.%m.%y", "to": "%Y%m%d"}, "19880818"),
        ("19880818", {"from": "hl7", "to": "%Y%m%d%z"}, "19880818"),
    ],
)
def test_date_reformats(adt, source, options, expected):
    """date reads hl7 or a strftime format and writes hl7 (at the precision read) or a strftime format."""
    adt.set("PID-7", source)
    assert run(adt, {"date": {"field": "PID-7", **options}}).get("PID-7") == expected


def test_date_that_does_not_parse_is_an_error(adt):
    """A value that is not a DTM raises TransformError naming the value and the format."""
    adt.set("PID-7", "1988-08-18")
    assert failure(adt, {"date": {"field": "PID-7", "from": "hl7", "to": "%Y"}}) == (
        f"{PATH}[0] (date PID-7): '1988-08-18' is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])"
    )
    assert failure(adt, {"date": {"field": "PID-7", "from": "%d/%m/%Y", "to": "hl7"}}) == (
        f"{PATH}[0] (date PID-7): '1988-08-18' does not match the format '%d/%m/%Y'"
    )


def test_date_will_not_invent_precision(adt):
    """A year-and-month value cannot be written with a day: TransformError, not the 1st of the month."""
    adt.set("PID-7", "198808")
    assert failure(adt, {"date": {"field": "PID-7", "from": "hl7", "to": "%Y-%m-%d"}}) == (
        f"{PATH}[0] (date PID-7): '198808' has no day; it cannot be written as '%Y-%m-%d'"
    )


def test_date_leaves_empty_and_null_values(adt):
    """An empty PID-7, or the HL7 null, is not a date to reformat."""
    for value in ("", '""'):
        adt.set("PID-7", value)
        assert run(adt, {"date": {"field": "PID-7", "from": "hl7", "to": "%Y"}}).get("PID-7") == value


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


# --- python ---------------------------------------------------------------------------------------


def test_python_function_changes_the_message(adt):
    """python: calls the named function with the message and uses what it returns."""
    assert run(adt, {"python": "tests.transforms.hatch:mark_processed"}).get("MSH-8") == "HATCH"


def test_python_function_may_return_a_new_message(adt):
    """The returned Message replaces the one passed in."""
    result = run(adt, {"python": "tests.transforms.hatch:rebuild"})
    assert result is not adt
    assert len(result) == len(adt) - 1


def test_python_target_may_be_an_attribute_path(adt):
    """module:Class.method resolves attribute by attribute."""
    assert (
        run(adt, {"python": "tests.transforms.hatch:Namespace.upper_name"}).get("PID-5.1")
        == "EVERYMAN&&&&ANISTON"
    )


def test_python_exception_becomes_a_transform_error(adt):
    """Whatever the function raises is a TransformError with the transform's path and the exception."""
    assert failure(adt, {"python": "tests.transforms.hatch:explode"}) == (
        f"{PATH}[0] (python tests.transforms.hatch:explode): KeyError: 'PID-99'"
    )


def test_python_transform_error_keeps_its_reason(adt):
    """A TransformError from the function keeps its text, prefixed with the transform's path."""
    assert failure(adt, {"python": "tests.transforms.hatch:refuse"}) == (
        f"{PATH}[0] (python tests.transforms.hatch:refuse): PID-7 is in the future"
    )


def test_python_must_return_a_message(adt):
    """A function that returns None is a TransformError."""
    assert failure(adt, {"python": "tests.transforms.hatch:forget_to_return"}).endswith(
        "returned NoneType, not a Message"
    )


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (
            "tests.transforms.nowhere:f",
            "cannot import tests.transforms.nowhere: ModuleNotFoundError: No module named 'tests.transforms.nowhere'",
        ),
        ("tests.transforms.hatch:missing", "tests.transforms.hatch has no missing"),
        (
            "tests.transforms.hatch:NOT_A_FUNCTION",
            "tests.transforms.hatch:NOT_A_FUNCTION is not callable (it is a str)",
        ),
    ],
)
def test_python_target_problems_are_reported_at_their_path(target, problem):
    """check_transforms reports a target that does not import or is not callable at (..., i, 'python')."""
    specs = [
        TransformSpec.model_validate({"trim": {"field": "PID-5"}}),
        TransformSpec.model_validate({"python": target}),
    ]
    assert check_transforms(specs, path_loc=("channels", 0, "transforms"), table_names=set()) == [
        (("channels", 0, "transforms", 1, "python"), problem)
    ]
    with pytest.raises(ConfigError, match=r"channels\[0\]\.transforms\[0\]\.python: "):
        build({"python": target})


def test_check_transforms_reports_unknown_tables():
    """A map naming a table that is not defined is reported at its table key, with the known names."""
    specs = [
        TransformSpec.model_validate({"map": {"field": "PV1-3.1", "table": name}})
        for name in ("locations", "payer")
    ]
    assert check_transforms(
        specs, path_loc=("channels", 2, "transforms"), table_names={"locations", "payers"}
    ) == [
        (("channels", 2, "transforms", 1, "map", "table"), "no table named 'payer'; known: locations, payers")
    ]


def test_transforms_are_named_by_their_yaml_path():
    """build_transforms names each transform path[i]."""
    assert [t.name for t in build({"trim": {"field": "PID-5.1"}}, {"set_version": "2.5"})] == [
        f"{PATH}[0]",
        f"{PATH}[1]",
    ]


# --- robustness -----------------------------------------------------------------------------------

_EVERY_TRANSFORM = [
    {"set": {"field": "PID-3[2].1.2", "value": "a|b"}},
    {"copy": {"from": "PID-3", "to": "OBX[2]-5"}},
    {"copy": {"from": "MSH-2", "to": "PID-2.2"}},
    {"delete": {"field": "PID-3"}},
    {"delete": {"field": "OBX-5[2]"}},
    {"delete": {"field": "PID-3.1"}},
    {"map": {"field": "PID-3.1", "table": "t", "on_miss": "keep"}},
    {"replace": {"field": "PID-3.1", "pattern": "[AB]", "with": "|"}},
    {"date": {"field": "PID-3.1", "from": "hl7", "to": "%Y"}},
    {"case": {"field": "OBX-5", "to": "upper"}},
    {"trim": {"field": "PID-3.1.1"}},
    {"add_segment": {"segment": "ZAD|a^b&c~d\\F\\", "after": "PID"}},
    {"remove_segment": {"segment": "OBX", "occurrence": 1}},
    {"rename_segment": {"from": "PID", "to": "ZID"}},
    {"split": {"field": "PID-3", "separator": "A"}},
    {"join": {"field": "OBX-5", "separator": "|"}},
    {"set_version": "2.5.1"},
]
_ALL_TRANSFORMS = build(*_EVERY_TRANSFORM, tables={"t": LookupTable("t", {"A": "B^C"})})


@given(hl7_texts())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_transforms_give_a_parseable_message_or_a_transform_error(text):
    """On any parseable message, every transform returns a message that parses again, or raises TransformError."""
    try:
        Message.parse(text)
    except HL7Error:
        assume(False)
    for transform in _ALL_TRANSFORMS:
        try:
            result = transform.apply(Message.parse(text))
        except TransformError as error:
            assert str(error).startswith(f"{transform.name} (")
            continue
        assert Message.parse(result.to_text()).to_text() == result.to_text()
