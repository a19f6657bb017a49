"""The YAML shape of filters, transforms and tables: what is accepted, and where each mistake is reported."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from engine.transforms.spec import FilterSpec, TableSpec, TransformSpec

# The example of the issue, written as an analyst would (ruamel's round-trip loader, as engine.config uses).
EXAMPLE = r"""
filters:
  - field: PID-3[1].4
    equals: PMS
  - {field: MSH-4, in: [NORTH, SOUTH]}
  - {field: PID-5.1, matches: "^[A-Z]"}
  - {field: PV1-2, exists: true}
  - {field: PV1-2, empty: false}
  - {field: OBX-5, greater_than: 100}
  - {field: OBX-5, at_least: 0.5, at_most: 7}
  - {field: PID-7, before: "2000-01-01"}
  - {field: PID-7, after: 1990-01-01T08:30:00+01:00}
  - any: [ {field: MSH-3, equals: PMS}, {field: MSH-3, equals: EMR} ]
  - all: [ {field: MSH-3, equals: PMS}, {not: {field: PID-8, equals: U}} ]
  - not: {field: PID-8, equals: U}
  - {field: OBX-3.1, equals: "2345-7", occurrence: any}
transforms:
  - set: {field: MSH-5, value: EMR}
  - set: {field: PID-8, value: '""'}
  - copy: {from: "PID-3[2].1", to: PID-2}   # in {...} a [ must be quoted
  - delete: {field: PID-19}
  - map: {field: PV1-3.1, table: locations, on_miss: keep}
  - map: {field: PV1-3.1, table: locations, on_miss: default, default: UNKNOWN}
  - replace: {field: PID-5.1, pattern: "\\s+", with: " "}
  - date: {field: PID-7, from: hl7, to: "%Y%m%d"}
  - case: {field: PID-5.1, to: upper}
  - trim: {field: PID-5.1}
  - add_segment: {segment: "ZPI|1|hello", after: PID}
  - remove_segment: {segment: NTE}
  - remove_segment: {segment: NTE, occurrence: 2}
  - rename_segment: {from: ZPI, to: ZXX}
  - split: {field: PID-13, separator: ";"}
  - join: {field: PID-13, separator: ";"}
  - set_version: "2.5.1"
  - python: tests.transforms.hatch:mark_processed
tables:
  locations: {inline: {"4N": "NORTH-4", "5S": "SOUTH-5"}}
  payers: {csv: tables/payers.csv, key: code, value: payer_id}
"""


@pytest.fixture(scope="module")
def example() -> dict:
    """The example document, loaded by ruamel's round-trip loader."""
    return YAML(typ="rt").load(EXAMPLE)


def test_every_filter_of_the_example_is_accepted(example):
    """Each filter item of the issue's example validates, with values read as meant."""
    filters = [FilterSpec.model_validate(item) for item in example["filters"]]
    assert filters[1].in_ == ("NORTH", "SOUTH")
    assert (filters[6].at_least, filters[6].at_most) == (Decimal("0.5"), Decimal(7))
    assert filters[7].before == datetime(2000, 1, 1)
    assert filters[8].after == datetime(1990, 1, 1, 8, 30, tzinfo=timezone(timedelta(hours=1)))
    assert type(filters[8].after) is datetime
    assert filters[10].all_[1].not_.equals == "U"
    assert filters[12].occurrence == "any"


def test_every_transform_of_the_example_is_accepted(example):
    """Each transform item validates; kind and options name what it does."""
    transforms = [TransformSpec.model_validate(item) for item in example["transforms"]]
    assert [t.kind for t in transforms] == [
        "set", "set", "copy", "delete", "map", "map", "replace", "date", "case", "trim", "add_segment",
        "remove_segment", "remove_segment", "rename_segment", "split", "join", "set_version", "python",
    ]  # fmt: skip
    assert transforms[1].options.value == '""'
    assert transforms[6].options.with_ == " "
    assert transforms[6].options.pattern == r"\s+"
    assert transforms[4].options.on_miss == "keep"
    assert transforms[16].options == "2.5.1"


def test_every_table_of_the_example_is_accepted(example):
    """Inline and CSV tables validate."""
    tables = {name: TableSpec.model_validate(item) for name, item in example["tables"].items()}
    assert tables["locations"].inline == {"4N": "NORTH-4", "5S": "SOUTH-5"}
    assert (tables["payers"].csv, tables["payers"].key, tables["payers"].value) == (
        "tables/payers.csv",
        "code",
        "payer_id",
    )


def test_an_unquoted_date_bound_is_accepted():
    """YAML reads `before: 2000-01-01` as a date; it means midnight that day."""
    (item,) = YAML(typ="rt").load("- {field: PID-7, before: 2000-01-01}")
    assert FilterSpec.model_validate(item).before == datetime(2000, 1, 1)


def test_map_on_miss_defaults_to_error():
    """A map without on_miss treats a value the table lacks as an error."""
    spec = TransformSpec.model_validate({"map": {"field": "PV1-3.1", "table": "t"}})
    assert spec.map_.on_miss == "error"


def errors(model, data) -> list[tuple[tuple, str]]:
    """(loc, message) of every validation error, as the config loader would see them."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [
        (error["loc"], error["msg"].removeprefix("Value error, "))
        for error in caught.value.errors(include_url=False)
    ]


FILTER_MISTAKES = [
    (
        {},
        (),
        "give one test: equals, in, matches, exists, empty, greater_than/at_least and/or"
        " less_than/at_most, after and/or before, any, all, not, xpath (got none)",
    ),
    ({"field": "PID-8"}, (), "(got none)"),
    ({"equals": "M"}, (), "equals needs field: the field path to test, e.g. field: PID-8"),
    ({"field": "pid-8", "equals": "M"}, ("field",), "invalid field path 'pid-8'"),
    ({"field": "PID-0", "equals": "M"}, ("field",), "indices are 1-based"),
    ({"field": "PID-8", "equals": "M", "in": ["F"]}, (), "give one test per filter: "),
    ({"field": "PID-8", "equals": "M", "in": ["F"]}, (), "(got equals, in); combine tests with all: or any:"),
    (
        {"field": "PID-8", "equals": 1},
        ("equals",),
        "must be text: put the value in quotes (YAML read it as the number 1)",
    ),
    ({"field": "PID-8", "in": []}, ("in",), "must not be empty"),
    (
        {"field": "PID-8", "in": ["A", True]},
        ("in", 1),
        "must be text: put the value in quotes (YAML read it as true)",
    ),
    ({"field": "PID-5", "matches": "(["}, ("matches",), "invalid regular expression '(['"),
    (
        {"field": "OBX-5", "greater_than": "ten"},
        ("greater_than",),
        "must be a number such as 100 or 7.5 (got 'ten')",
    ),
    ({"field": "OBX-5", "at_most": True}, ("at_most",), "must be a number such as 100 or 7.5 (got True)"),
    ({"field": "OBX-5", "at_most": "Infinity"}, ("at_most",), "must be a finite number"),
    ({"field": "OBX-5", "greater_than": 1, "at_least": 2}, (), "give greater_than or at_least, not both"),
    (
        {"field": "OBX-5", "greater_than": 5, "less_than": 5},
        (),
        "no number is within these bounds: the filter could never pass",
    ),
    ({"field": "OBX-5", "greater_than": 5, "before": "2000-01-01"}, (), "(got greater_than, before)"),
    ({"field": "PID-7", "before": "01/01/2000"}, ("before",), "must be an ISO date or date-time"),
    (
        {"field": "PID-7", "after": "2000-01-02", "before": "2000-01-01"},
        (),
        "no date is both after and before",
    ),
    ({"any": [{"field": "PID-8"}]}, ("any", 0), "(got none)"),
    ({"any": []}, ("any",), "must not be empty"),
    (
        {"not": {"field": "PID-8", "equals": "M"}, "field": "PID-8"},
        (),
        "field cannot go with not: put it in the filters inside not",
    ),
    ({"all": [{"field": "PID-8", "equals": "M"}], "occurrence": "any"}, (), "occurrence cannot go with all"),
    (
        {"field": "PID[1]-3[1]", "equals": "x", "occurrence": "any"},
        ("occurrence",),
        "occurrence: any has nothing to range over",
    ),
    ({"field": "MSH-2", "equals": "x", "occurrence": "all"}, ("occurrence",), "MSH-2 names a single value"),
    (
        {"field": "PID-8", "equals": "M", "occurrence": "some"},
        ("occurrence",),
        "Input should be 'first', 'any' or 'all'",
    ),
    ({"field": "PID-8", "equal": "M"}, ("equal",), "Extra inputs are not permitted"),
    (
        {"not": [{"field": "PID-8", "equals": "M"}]},
        ("not",),
        "Input should be a valid dictionary or instance of FilterSpec",
    ),
]


@pytest.mark.parametrize(("data", "loc", "message"), FILTER_MISTAKES)
def test_filter_mistakes_are_reported_at_their_key(data, loc, message):
    """Each filter mistake gives one error, at the key it concerns, saying what to write."""
    (found,) = errors(FilterSpec, data)
    assert found[0] == loc
    assert message in found[1]


TRANSFORM_MISTAKES = [
    (
        {},
        (),
        "give exactly one of set, copy, delete, map, replace, date, case, trim, add_segment,"
        " remove_segment, rename_segment, split, join, set_version, python, xslt, xpath (got none)",
    ),
    ({"set": {"field": "PID-1", "value": "x"}, "trim": {"field": "PID-1"}}, (), "(got set, trim)"),
    ({"sett": {"field": "PID-1", "value": "x"}}, ("sett",), "Extra inputs are not permitted"),
    (
        {"set": {"field": "MSH-1", "value": "#"}},
        ("set", "field"),
        "MSH-1 and MSH-2 are the message's delimiters; they cannot be changed",
    ),
    (
        {"copy": {"from": "PID-3", "to": "MSH-2.1"}},
        ("copy", "to"),
        "MSH-1 and MSH-2 are the message's delimiters",
    ),
    ({"delete": {"field": "MSH-2"}}, ("delete", "field"), "MSH-1 and MSH-2"),
    ({"set": {"field": "PID-8"}}, ("set", "value"), "Field required"),
    ({"set": {"field": "PID-8", "value": 1}}, ("set", "value"), "YAML read it as the number 1"),
    ({"copy": {"to": "PID-2"}}, ("copy", "from"), "Field required"),
    (
        {"map": {"field": "PV1-3", "table": "t", "on_miss": "default"}},
        ("map", "on_miss"),
        "on_miss: default needs default:",
    ),
    (
        {"map": {"field": "PV1-3", "table": "t", "default": "X"}},
        ("map", "on_miss"),
        "default: is only used with on_miss: default (got on_miss: error)",
    ),
    (
        {"map": {"field": "PV1-3", "table": "t", "on_miss": "ignore"}},
        ("map", "on_miss"),
        "Input should be 'keep', 'default' or 'error'",
    ),
    ({"map": {"field": "PV1-3", "table": "my table"}}, ("map", "table"), "must be letters, digits"),
    (
        {"replace": {"field": "PID-5", "pattern": "(a)", "with": "\\2"}},
        ("replace", "with"),
        "'\\\\2' does not fit the pattern: invalid group reference 2",
    ),
    (
        {"replace": {"field": "PID-5", "pattern": "(?P<x>a)", "with": "\\g<y>"}},
        ("replace", "with"),
        "unknown group name 'y'",
    ),
    (
        {"date": {"field": "PID-7", "from": "%d.%m", "to": "hl7"}},
        ("date", "from"),
        "must contain the year (%Y or %y)",
    ),
    (
        {"date": {"field": "PID-7", "from": "hl7", "to": "YYYYMMDD"}},
        ("date", "to"),
        "must be 'hl7' or a strftime format",
    ),
    (
        {"case": {"field": "PID-5", "to": "sentence"}},
        ("case", "to"),
        "Input should be 'upper', 'lower' or 'title'",
    ),
    ({"trim": {"field": "PID-5", "chars": " "}}, ("trim", "chars"), "Extra inputs are not permitted"),
    ({"add_segment": {"segment": "zpi|1"}}, ("add_segment", "segment"), "must be a segment ID"),
    ({"add_segment": {"segment": "MSH|^~\\&|A"}}, ("add_segment", "segment"), "MSH is a header segment"),
    (
        {"add_segment": {"segment": "ZPI|1\rZPJ|2"}},
        ("add_segment", "segment"),
        "must be one segment, without line breaks",
    ),
    (
        {"add_segment": {"segment": "ZPI|1", "after": "PID", "before": "PV1"}},
        ("add_segment",),
        "give after or before, not both",
    ),
    ({"add_segment": {"segment": "ZPI|1", "before": "MSH"}}, ("add_segment",), "nothing can go before MSH"),
    ({"remove_segment": {"segment": "MSH"}}, ("remove_segment", "segment"), "MSH is a header segment"),
    (
        {"remove_segment": {"segment": "NTE", "occurrence": 0}},
        ("remove_segment", "occurrence"),
        "greater than or equal to 1",
    ),
    ({"rename_segment": {"from": "ZPI", "to": "BHS"}}, ("rename_segment", "to"), "BHS is a header segment"),
    (
        {"split": {"field": "PID-13[1]", "separator": ";"}},
        ("split", "field"),
        "must name a whole field such as PID-13",
    ),
    ({"join": {"field": "PID-13", "separator": ""}}, ("join", "separator"), "must not be empty"),
    (
        {"set_version": 2.5},
        ("set_version",),
        "must be text: put the value in quotes (YAML read it as the number 2.5)",
    ),
    ({"set_version": "3.0"}, ("set_version",), "must be an HL7 v2 version such as 2.3.1 or 2.5.1"),
    ({"python": "module.function"}, ("python",), "must be package.module:function"),
]


@pytest.mark.parametrize(("data", "loc", "message"), TRANSFORM_MISTAKES)
def test_transform_mistakes_are_reported_at_their_key(data, loc, message):
    """Each transform mistake gives one error, at the key it concerns."""
    (found,) = errors(TransformSpec, data)
    assert found[0] == loc
    assert message in found[1]


TABLE_MISTAKES = [
    ({}, (), "give inline: (a mapping of entries) or csv: (a file with key: and value: columns), not both"),
    ({"inline": {"A": "B"}, "csv": "a.csv", "key": "k", "value": "v"}, (), "not both"),
    ({"csv": "a.csv"}, (), "csv: needs key and value"),
    ({"csv": "a.csv", "key": "code"}, (), "csv: needs value"),
    ({"csv": "a.csv", "key": "code", "value": "code"}, (), "key and value must be different columns"),
    ({"inline": {"A": "B"}, "key": "a"}, (), "key only go with csv:"),
    ({"inline": {}}, ("inline",), "must not be empty"),
    ({"inline": {"M": 1}}, ("inline", "M"), "YAML read it as the number 1"),
]


@pytest.mark.parametrize(("data", "loc", "message"), TABLE_MISTAKES)
def test_table_mistakes_are_reported_at_their_key(data, loc, message):
    """Each table mistake gives one error, at the key it concerns."""
    (found,) = errors(TableSpec, data)
    assert found[0] == loc
    assert message in found[1]


def test_specs_are_frozen():
    """A validated spec cannot be changed afterwards."""
    spec = FilterSpec.model_validate({"field": "PID-8", "equals": "M"})
    with pytest.raises(ValidationError):
        spec.equals = "F"
