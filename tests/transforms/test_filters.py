"""Filters on corpus messages: every test, occurrences and repetitions, reasons, no surprise exceptions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings

from engine.errors import HL7Error, TransformError
from engine.hl7.message import Message
from engine.transforms.filters import build_filters
from engine.transforms.spec import FilterSpec
from tests.transforms.messages import hl7_texts

PATH = "channels[0].filters"


def check(message: Message, spec: dict) -> str | None:
    """The reason one filter built from ``spec`` gives for ``message`` (None: it passes)."""
    (only,) = build_filters([FilterSpec.model_validate(spec)], path=PATH)
    return only.check(message)


def reason(message: Message, spec: dict) -> str:
    """The reason, without the filter's name; fails the test when the message passes."""
    found = check(message, spec)
    assert found is not None, "the message passed"
    prefix = f"{PATH}[0]: "
    assert found.startswith(prefix)
    return found[len(prefix) :]


# --- naming --------------------------------------------------------------------------------------


def test_filters_are_named_by_their_yaml_path(adt):
    """build_filters names each filter path[i] and starts each reason with that name."""
    specs = [
        FilterSpec.model_validate(s)
        for s in ({"field": "MSH-3", "equals": "ADTApp"}, {"field": "MSH-3", "equals": "X"})
    ]
    filters = build_filters(specs, path="channels[2].filters")
    assert [f.name for f in filters] == ["channels[2].filters[0]", "channels[2].filters[1]"]
    assert filters[0].check(adt) is None
    assert filters[1].check(adt) == "channels[2].filters[1]: MSH-3 'ADTApp' is not 'X'"


# --- equals / in / matches -------------------------------------------------------------------------


def test_equals_compares_the_value_get_reads(adt):
    """equals passes on the exact value at the path (PID-3 means its first repetition)."""
    assert check(adt, {"field": "PID-3[1].1", "equals": "PATID1234"}) is None
    assert check(adt, {"field": "PID-3.5", "equals": "MR"}) is None
    assert reason(adt, {"field": "PID-3.5", "equals": "SS"}) == "PID-3.5 'MR' is not 'SS'"


def test_equals_compares_unescaped_values(adt):
    """A value with \\T\\ in the message equals the text with '&' in the filter."""
    assert check(adt, {"field": "PV1-14", "equals": "NHS Provider-General (inc.A&E-this Hosp)"}) is None


def test_equals_on_a_composite_part_compares_its_raw_text(adt):
    """A path above the leaf compares the raw text with its delimiters."""
    assert check(adt, {"field": "MSH-9", "equals": "ADT^A01^ADT_A01"}) is None


def test_equals_empty_matches_an_absent_field(adt):
    """equals '' passes for a field the message does not have."""
    assert check(adt, {"field": "ZZZ-1", "equals": ""}) is None


def test_in_reason_lists_the_allowed_values(adt):
    """in fails with "<path> '<value>' not in [A, B]" (the documented reason shape)."""
    assert check(adt, {"field": "MSH-3", "in": ["ADTApp", "LAB"]}) is None
    assert (
        reason(adt, {"field": "MSH-4.1", "in": ["NORTH", "SOUTH"]})
        == "MSH-4.1 'GHHSFacility' not in [NORTH, SOUTH]"
    )


def test_matches_searches_anywhere_in_the_value(adt):
    """matches uses re.search: an unanchored pattern may match in the middle."""
    assert check(adt, {"field": "PID-5.2", "matches": "DA"}) is None
    assert check(adt, {"field": "PID-5.2", "matches": "^[A-Z]+$"}) is None
    assert reason(adt, {"field": "PID-5.2", "matches": "^DA"}) == "PID-5.2 'ADAM' does not match '^DA'"


# --- exists / empty -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "present"),
    [
        ("PID-8", True),  # M
        ("PID-4.4", True),  # test2
        ("PID-2.9", False),  # component beyond the last
        ("PID-6.5", False),  # empty component between values
        ("ZZZ-1", False),  # no such segment
        ("PID-99", False),  # no such field
    ],
)
def test_exists_and_empty_agree(adt, path, present):
    """exists: true, exists: false, empty: true and empty: false are two tests, both ways round."""
    assert (check(adt, {"field": path, "exists": True}) is None) is present
    assert (check(adt, {"field": path, "empty": False}) is None) is present
    assert (check(adt, {"field": path, "exists": False}) is None) is not present
    assert (check(adt, {"field": path, "empty": True}) is None) is not present


def test_the_hl7_null_counts_as_empty(adt):
    """A field holding the HL7 null "" is empty for exists/empty, but equals '""' still sees it."""
    adt.set("PID-8", '""')
    assert reason(adt, {"field": "PID-8", "exists": True}) == "PID-8 '\"\"' is absent or empty"
    assert check(adt, {"field": "PID-8", "equals": '""'}) is None


def test_exists_reason_names_the_field(adt):
    """exists: false fails with "<path> '<value>' is present"."""
    assert reason(adt, {"field": "PID-8", "exists": False}) == "PID-8 'M' is present"


# --- numbers --------------------------------------------------------------------------------------


def test_numeric_comparisons_on_obx_5(oru):
    """greater_than/less_than are strict, at_least/at_most inclusive, against OBX[4]-5 = 40.1."""
    path = "OBX[4]-5"
    assert check(oru, {"field": path, "greater_than": 40}) is None
    assert check(oru, {"field": path, "at_least": "40.1"}) is None
    assert check(oru, {"field": path, "at_most": 40.1}) is None
    assert check(oru, {"field": path, "less_than": 41}) is None
    assert reason(oru, {"field": path, "greater_than": 40.1}) == "OBX[4]-5 '40.1' is not greater than 40.1"
    assert reason(oru, {"field": path, "less_than": 40.1}) == "OBX[4]-5 '40.1' is not less than 40.1"


def test_a_range_tests_one_value_against_both_bounds(oru):
    """greater_than and less_than in one filter make a range; the reason states it."""
    assert check(oru, {"field": "OBX[5]-5", "greater_than": 200, "less_than": 300}) is None
    assert (
        reason(oru, {"field": "OBX[4]-5", "at_least": 0, "at_most": 10})
        == "OBX[4]-5 '40.1' is not at least 0 and at most 10"
    )


@pytest.mark.parametrize(
    ("text", "number"), [("+5", 5), ("-3.5", -3.5), (".5", 0.5), ("5.", 5), (" 7 ", 7), ("007", 7)]
)
def test_hl7_numbers_are_read(adt, text, number):
    """Signs, leading zeros, a bare decimal point and surrounding spaces are numbers (HL7 NM)."""
    adt.set("OBX-5", text)
    assert check(adt, {"field": "OBX-5", "at_least": number, "at_most": number}) is None


@pytest.mark.parametrize("text", ["<5", "1e3", "nan", "inf", "1_000", "", "POS", "1,5", "١٢"])
def test_a_value_that_is_not_a_number_is_filtered_not_an_error(adt, text):
    """A non-numeric value fails a numeric test with a reason; it raises nothing."""
    adt.set("OBX-5", text)
    assert reason(adt, {"field": "OBX-5", "greater_than": 0}) == f"OBX-5 {text!r} is not a number"


# --- dates ----------------------------------------------------------------------------------------


def test_before_and_after_read_an_hl7_date_time(adt):
    """PID-7 198808181126+0215 is after 1988-08-18 and before 1988-08-19; the bounds are ISO."""
    assert check(adt, {"field": "PID-7", "after": "1988-08-18", "before": "1988-08-19"}) is None
    assert (
        reason(adt, {"field": "PID-7", "before": "1988-08-18"})
        == "PID-7 '198808181126+0215' is not before 1988-08-18"
    )


def test_a_partial_date_counts_from_the_start_of_its_period(adt):
    """A DTM of lower precision ('1999') is the first moment of that period."""
    adt.set("PID-7", "1999")
    assert check(adt, {"field": "PID-7", "before": "1999-01-01T00:00:01"}) is None
    assert reason(adt, {"field": "PID-7", "after": "1999-01-01"}) == "PID-7 '1999' is not after 1999-01-01"


def test_offsets_are_compared_only_when_both_sides_have_one(adt):
    """11:26+0215 is 09:11 UTC: before 10:00Z as instants, but after 10:00 as wall-clock time."""
    assert check(adt, {"field": "PID-7", "before": "1988-08-18T10:00:00+00:00"}) is None
    assert check(adt, {"field": "PID-7", "after": "1988-08-18T10:00:00"}) is None


def test_an_unparseable_date_is_filtered_with_a_reason(adt):
    """A value that is not a DTM (or a February 30th) fails a date test; it raises nothing."""
    for text in ("18/08/1988", "19880230", ""):
        adt.set("PID-7", text)
        assert reason(adt, {"field": "PID-7", "before": "2100-01-01"}).startswith(
            f"PID-7 {text!r} is not an HL7 date/time"
        )


def test_fractional_seconds_count(adt):
    """EVN-6 20210817151943.4+0200 is after 15:19:43.3 and before 15:19:43.5 (wall clock)."""
    spec = {"field": "EVN-6", "after": "2021-08-17T15:19:43.3", "before": "2021-08-17T15:19:43.5"}
    assert check(adt, spec) is None


# --- any / all / not ------------------------------------------------------------------------------


def test_any_passes_when_one_child_passes(adt):
    """any: is an or; when none passes the reason lists every child's reason."""
    assert (
        check(adt, {"any": [{"field": "MSH-3", "equals": "PMS"}, {"field": "MSH-3", "equals": "ADTApp"}]})
        is None
    )
    assert reason(
        adt, {"any": [{"field": "MSH-3", "equals": "PMS"}, {"field": "MSH-3", "equals": "EMR"}]}
    ) == ("none of: MSH-3 'ADTApp' is not 'PMS'; MSH-3 'ADTApp' is not 'EMR'")


def test_all_fails_with_the_first_failing_child(adt):
    """all: is an and; the reason is the first child that fails."""
    spec = {
        "all": [
            {"field": "MSH-3", "equals": "ADTApp"},
            {"field": "PID-8", "equals": "F"},
            {"field": "PID-8", "equals": "U"},
        ]
    }
    assert reason(adt, spec) == "PID-8 'M' is not 'F'"


def test_not_fails_with_the_reason_its_child_passes(adt):
    """not: inverts; when the child passes the reason says what it found."""
    assert check(adt, {"not": {"field": "PID-8", "equals": "U"}}) is None
    assert reason(adt, {"not": {"field": "PID-8", "equals": "M"}}) == "PID-8 'M' equals 'M'"


def test_a_failing_not_over_any_names_the_child_that_passed(adt):
    """not: {any: [...]} fails with the reason of the first child of any that passed."""
    spec = {"not": {"any": [{"field": "MSH-3", "equals": "X"}, {"field": "PID-8", "in": ["M", "F"]}]}}
    assert reason(adt, spec) == "PID-8 'M' in [M, F]"


def test_nested_groups(adt):
    """not of any of all nests; the reason of a failing not over a passing all lists all its children."""
    spec = {
        "not": {
            "any": [
                {"field": "MSH-3", "equals": "X"},
                {"all": [{"field": "PID-8", "in": ["M", "F"]}, {"field": "MSH-12", "equals": "2.8"}]},
            ]
        }
    }
    assert reason(adt, spec) == "all of: PID-8 'M' in [M, F]; MSH-12 '2.8' equals '2.8'"


# --- occurrences and repetitions ------------------------------------------------------------------


def test_first_occurrence_is_the_default(oru):
    """Without occurrence, OBX-3.1 is the first OBX's value only."""
    assert check(oru, {"field": "OBX-3.1", "equals": "11156-7"}) is None
    assert reason(oru, {"field": "OBX-3.1", "equals": "20570-8"}) == "OBX-3.1 '11156-7' is not '20570-8'"


def test_occurrence_any_passes_when_some_occurrence_matches(oru):
    """occurrence: any looks at every OBX and names the one that matched when asked."""
    spec = {"not": {"field": "OBX-3.1", "equals": "20570-8", "occurrence": "any"}}
    assert reason(oru, spec) == "OBX[4]-3.1 '20570-8' equals '20570-8'"


def test_occurrence_any_reason_lists_some_values(oru):
    """When no OBX matches, the reason lists the first five values and counts the rest."""
    assert reason(oru, {"field": "OBX-5", "greater_than": 500, "occurrence": "any"}) == (
        "no OBX-5 is greater than 500: OBX[1]-5 '', OBX[2]-5 '4.06', OBX[3]-5 '', OBX[4]-5 '40.1',"
        " OBX[5]-5 '221' and 5 more"
    )


def test_occurrence_all_fails_on_the_first_value_that_fails(oru):
    """occurrence: all needs every OBX; here OBX[1]-11 is I, not F."""
    assert (
        reason(oru, {"field": "OBX-11", "in": ["F", "P"], "occurrence": "all"})
        == "OBX[1]-11 'I' not in [F, P]"
    )
    assert check(oru, {"field": "OBX-11", "in": ["F", "P", "I"], "occurrence": "all"}) is None


def test_occurrence_all_says_how_many_values_passed(oru):
    """A passing occurrence: all under not reports every value it looked at."""
    assert (
        reason(oru, {"not": {"field": "OBX-2", "equals": "NM", "occurrence": "all"}})
        == "every OBX-2 equals 'NM' (10 values)"
    )


def test_occurrence_ranges_over_repetitions(adt):
    """PID-3.4 with occurrence: any looks at every repetition of PID-3; the found one is named."""
    assert check(adt, {"field": "PID-3.4", "equals": "USSSA", "occurrence": "any"}) is None
    assert reason(adt, {"field": "PID-3.4", "equals": "USSSA"}) == "PID-3.4 'test1&2.16.1&HCD' is not 'USSSA'"
    assert (
        reason(adt, {"not": {"field": "PID-3.4", "equals": "USSSA", "occurrence": "any"}})
        == "PID-3[2].4 'USSSA' equals 'USSSA'"
    )


def test_occurrence_ranges_over_segments_and_repetitions(adt):
    """OBX-5 60~120 gives two values; all must be numbers under 200, any must be over 100."""
    assert check(adt, {"field": "OBX-5", "less_than": 200, "occurrence": "all"}) is None
    assert check(adt, {"field": "OBX-5", "greater_than": 100, "occurrence": "any"}) is None
    assert (
        reason(adt, {"field": "OBX-5", "greater_than": 100, "occurrence": "all"})
        == "OBX-5[1] '60' is not greater than 100"
    )


def test_an_explicit_index_in_the_path_is_kept(oru):
    """OBX[2]-5 with occurrence: any ranges over OBX[2]'s repetitions only."""
    assert (
        reason(oru, {"field": "OBX[2]-5", "greater_than": 100, "occurrence": "any"})
        == "no OBX[2]-5 is greater than 100: OBX[2]-5 '4.06'"
    )


def test_an_absent_segment_is_one_empty_value_for_every_occurrence_mode(oru):
    """With no such segment, any and all see one empty value: exists fails, empty passes, as with first."""
    for occurrence in ("first", "any", "all"):
        assert check(oru, {"field": "NTE-3", "exists": True, "occurrence": occurrence}) is not None
        assert check(oru, {"field": "NTE-3", "empty": True, "occurrence": occurrence}) is None


def test_occurrence_any_with_empty_finds_an_empty_obx_5(oru):
    """OBX[1]-5 is empty: empty passes for any, fails for all (the other nine have values)."""
    assert check(oru, {"field": "OBX-5", "empty": True, "occurrence": "any"}) is None
    assert (
        reason(oru, {"field": "OBX-5", "exists": True, "occurrence": "all"})
        == "OBX[1]-5 '' is absent or empty"
    )


# --- delimiters and escapes -----------------------------------------------------------------------


def test_filters_read_messages_with_other_delimiters(odd):
    """With ^ as field and | as repetition separator, paths mean the same parts."""
    assert check(odd, {"field": "PID-3.4.1", "equals": "FOO"}) is None
    assert check(odd, {"field": "PID-5.2", "equals": "JOHN"}) is None
    assert check(odd, {"field": "PID-3.1", "equals": "22222", "occurrence": "any"}) is None
    assert reason(odd, {"field": "PID-3.1", "equals": "22222"}) == "PID-3.1 '11111' is not '22222'"


def test_a_long_value_is_shortened_in_the_reason(adt):
    """A reason shows at most 60 characters of a value (an OBX-5 may be a whole document)."""
    adt.set("OBX-5", "A" * 500)
    found = reason(adt, {"field": "OBX-5", "equals": "B"})
    assert found == "OBX-5 '" + "A" * 55 + "...' is not 'B'"  # 60 characters between the spaces


# --- robustness -----------------------------------------------------------------------------------

_EVERY_TEST = [
    {"equals": "A"},
    {"in": ["A", "B"]},
    {"matches": "^A|&"},
    {"exists": True},
    {"empty": True},
    {"greater_than": 1},
    {"at_least": -1.5, "at_most": 1000},
    {"before": "2000-01-01T00:00:00+01:00"},
    {"after": "1900-01-01"},
]
_PATHS = ["MSH-3", "MSH-2", "PID-3", "PID-3.1", "PID-3[2].4.2", "PID[2]-5", "OBX-5", "ZZZ-1"]
_FILTER_SPECS = [
    FilterSpec.model_validate({"field": path, **test, **({"occurrence": occurrence} if occurrence else {})})
    for path in _PATHS
    for test in _EVERY_TEST
    for occurrence in (None, "any", "all")
    if not (occurrence and path == "MSH-2")
]
_ALL_FILTERS = build_filters(
    [
        *_FILTER_SPECS,
        FilterSpec.model_validate(
            {
                "not": {
                    "any": [{"field": "PID-3", "equals": "x"}, {"all": [{"field": "OBX-5", "exists": True}]}]
                }
            }
        ),
    ],
    path=PATH,
)


@given(hl7_texts())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_filters_never_raise_on_arbitrary_messages(text):
    """Every kind of filter, in every occurrence mode, returns None or a reason on any parseable message."""
    try:
        message = Message.parse(text)
    except HL7Error:
        assume(False)
    for each in _ALL_FILTERS:
        try:
            found = each.check(message)
        except TransformError:  # the only exception a filter may raise
            continue
        assert found is None or found.startswith(f"{each.name}: ")
