"""Value transforms on corpus messages: set, copy, map, replace, case, trim, date; escapes and delimiters."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.hl7.message import Message
from engine.transforms.lookup import LookupTable
from tests.transforms.steps import LOCATIONS, PATH, build, failure, run, segment_text

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
        f"{PATH}[0] (date PID-7): '1988-08-18'"
        " is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])"
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
