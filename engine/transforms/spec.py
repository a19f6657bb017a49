"""The YAML shape of filters, transforms and lookup tables: what an analyst writes in channels.yaml.

Each list item is one model with optional keys and a check that exactly one of them is given, so a
mistake is reported once, at the key it concerns (``channels[0].transforms[3].map.table``), instead
of once per union branch. Field paths, regular expressions, formats and dates are checked at config
time by their types (engine.transforms.spectypes); ``filters.py`` and ``transforms.py`` turn the
checked specs into pipeline stages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from lxml import etree
from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.configtypes import Frozen, Name, check_not_empty, check_version, resolve_path
from engine.hl7.message import HEADER_SEGMENTS, parse_path
from engine.transforms.spectypes import (
    BodySegmentName,
    DateBound,
    DateFormat,
    FieldPathText,
    NonEmptyText,
    Number,
    ParseFormat,
    PythonTarget,
    Regex,
    SegmentName,
    SegmentText,
    Text,
    WholeFieldPath,
    WritablePath,
    XmlName,
    XPathText,
    given_keys,
)
from engine.transforms.xml import compile_stylesheet

__all__ = [
    "AddSegmentSpec",
    "CaseSpec",
    "CopySpec",
    "DateSpec",
    "DeleteSpec",
    "FieldSpec",
    "FilterSpec",
    "MapSpec",
    "RemoveSegmentSpec",
    "RenameSegmentSpec",
    "RepetitionsSpec",
    "ReplaceSpec",
    "SetSpec",
    "TableSpec",
    "TransformSpec",
    "XPathReadSpec",
    "XsltSpec",
]


# ---------------------------------------------------------------------------------------------
# Filters

_SIMPLE_TESTS = ("equals", "in_", "matches", "exists", "empty")
_LOWER_BOUNDS = ("greater_than", "at_least")
_UPPER_BOUNDS = ("less_than", "at_most")
_DATE_BOUNDS = ("after", "before")
_GROUPS = ("any_", "all_", "not_", "xpath")  # tests of the whole message, without field
_TEST_NAMES = (
    "equals, in, matches, exists, empty, greater_than/at_least and/or less_than/at_most,"
    " after and/or before, any, all, not, xpath"
)


class FilterSpec(Frozen):
    """One filter: a test of one field (``field`` plus one test), or ``any``/``all``/``not`` of filters."""

    field: FieldPathText | None = None
    equals: Text | None = None
    in_: Annotated[tuple[Text, ...], AfterValidator(check_not_empty)] | None = Field(None, alias="in")
    matches: Regex | None = None
    exists: bool | None = None
    empty: bool | None = None
    greater_than: Number | None = None
    at_least: Number | None = None
    less_than: Number | None = None
    at_most: Number | None = None
    after: DateBound | None = None
    before: DateBound | None = None
    any_: Annotated[tuple[FilterSpec, ...], AfterValidator(check_not_empty)] | None = Field(None, alias="any")
    all_: Annotated[tuple[FilterSpec, ...], AfterValidator(check_not_empty)] | None = Field(None, alias="all")
    not_: FilterSpec | None = Field(None, alias="not")
    xpath: XPathText | None = None  # true by XPath's boolean() on the message as v2.xml
    occurrence: Literal["first", "any", "all"] | None = None

    @field_validator("occurrence")
    @classmethod
    def _something_to_range_over(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = info.data.get("field")
        if value in ("any", "all") and path is not None:
            where = parse_path(path)
            fixed = where.occurrence is not None and where.repetition is not None
            if fixed or (where.segment in HEADER_SEGMENTS and where.field <= 2):
                raise ValueError(
                    f"occurrence: {value} has nothing to range over: {path} names a single value"
                    " (leave out the [occurrence] or the [repetition])"
                )
        return value

    @model_validator(mode="after")
    def _one_test(self) -> FilterSpec:
        tests = given_keys(self, _SIMPLE_TESTS)
        numeric = given_keys(self, _LOWER_BOUNDS + _UPPER_BOUNDS)
        dates = given_keys(self, _DATE_BOUNDS)
        groups = given_keys(self, _GROUPS)
        kinds = (
            tests + ([", ".join(numeric)] if numeric else []) + ([", ".join(dates)] if dates else []) + groups
        )
        if not kinds:
            raise ValueError(f"give one test: {_TEST_NAMES} (got none)")
        if len(kinds) > 1:
            raise ValueError(
                f"give one test per filter: {_TEST_NAMES}"
                f" (got {', '.join(tests + numeric + dates + groups)}); combine tests with all: or any:"
            )
        for pair in (_LOWER_BOUNDS, _UPPER_BOUNDS):
            if len(given_keys(self, pair)) > 1:
                raise ValueError(f"give {pair[0]} or {pair[1]}, not both")
        if groups:
            extra = given_keys(self, ("field", "occurrence"))
            if extra:
                raise ValueError(
                    f"{' and '.join(extra)} cannot go with {groups[0]}:"
                    f" put {'it' if len(extra) == 1 else 'them'} in the filters inside {groups[0]}"
                )
        elif self.field is None:
            raise ValueError(f"{kinds[0]} needs field: the field path to test, e.g. field: PID-8")
        lower = self.greater_than if self.greater_than is not None else self.at_least
        upper = self.less_than if self.less_than is not None else self.at_most
        if lower is not None and upper is not None:
            strict = self.greater_than is not None or self.less_than is not None
            if lower > upper or (lower == upper and strict):
                raise ValueError("no number is within these bounds: the filter could never pass")
        if self.after is not None and self.before is not None:
            after, before = self.after, self.before
            if after.tzinfo is None or before.tzinfo is None:  # compared as wall-clock times, as filters do
                after, before = after.replace(tzinfo=None), before.replace(tzinfo=None)
            if after >= before:
                raise ValueError("no date is both after and before these bounds: the filter could never pass")
        return self


# ---------------------------------------------------------------------------------------------
# Transforms


class FieldSpec(Frozen):
    """A transform of one value (``trim``); the base of the transforms below that take more keys."""

    field: WritablePath


class SetSpec(FieldSpec):
    """``set``: write a fixed value ('' empties it, '""' writes the HL7 null)."""

    value: Text


class CopySpec(Frozen):
    """``copy``: write the value at ``from`` to ``to``."""

    from_: FieldPathText = Field(alias="from")
    to: WritablePath


class DeleteSpec(FieldSpec):
    """``delete``: empty a field (every repetition), remove one repetition, or empty a component."""


class MapSpec(FieldSpec):
    """``map``: replace a value by its entry in a lookup table."""

    table: Name
    default: Text | None = None
    on_miss: Literal["keep", "default", "error"] = Field("error", validate_default=True)

    @field_validator("on_miss")
    @classmethod
    def _default_given_with_default(cls, value: str, info: ValidationInfo) -> str:
        if "default" not in info.data:  # default itself is invalid and reported
            return value
        if value == "default" and info.data["default"] is None:
            raise ValueError("on_miss: default needs default: the value to write when the table has no entry")
        if value != "default" and info.data["default"] is not None:
            raise ValueError(f"default: is only used with on_miss: default (got on_miss: {value})")
        return value


class ReplaceSpec(FieldSpec):
    """``replace``: substitute every match of a regular expression (Python ``re.sub``)."""

    pattern: Regex
    with_: Text = Field(alias="with")

    @field_validator("with_")
    @classmethod
    def _fits_pattern(cls, value: str, info: ValidationInfo) -> str:
        if "pattern" in info.data:
            try:
                re.compile(info.data["pattern"]).sub(value, "")  # compiles the template before any match
            except (re.error, IndexError) as exc:
                raise ValueError(f"{value!r} does not fit the pattern: {exc}") from None
        return value


class DateSpec(FieldSpec):
    """``date``: rewrite a date/time from one format to another ('hl7' is the DTM format)."""

    from_: ParseFormat = Field(alias="from")
    to: DateFormat


class CaseSpec(FieldSpec):
    """``case``: upper-, lower- or title-case a value."""

    to: Literal["upper", "lower", "title"]


class RepetitionsSpec(Frozen):
    """``split`` (one value -> repetitions) and ``join`` (repetitions -> one value) of a whole field."""

    field: WholeFieldPath
    separator: NonEmptyText


class AddSegmentSpec(Frozen):
    """``add_segment``: a segment written with | ^ ~ \\ &, added after or before a segment, or last.

    ``after`` and ``before`` name the first segment of that name.
    """

    segment: SegmentText
    after: SegmentName | None = None
    before: SegmentName | None = None

    @model_validator(mode="after")
    def _one_place(self) -> AddSegmentSpec:
        if self.after is not None and self.before is not None:
            raise ValueError("give after or before, not both (neither adds the segment at the end)")
        if self.before == "MSH":
            raise ValueError("nothing can go before MSH")
        return self


class RemoveSegmentSpec(Frozen):
    """``remove_segment``: remove every occurrence of a segment, or only the N-th."""

    segment: BodySegmentName
    occurrence: Annotated[int, Field(ge=1)] | None = None


class XsltSpec(Frozen):
    """``xslt``: a stylesheet (a file, relative to the config's folder, or ``inline``) and its parameters.

    Compiled when the configuration is loaded: a stylesheet that does not compile, or a
    parameter it does not declare, is a problem at this path.
    """

    stylesheet: Path | None = None
    inline: NonEmptyText | None = None
    parameters: dict[XmlName, Text] = Field(default_factory=dict)
    _source: bytes = PrivateAttr(default=b"")

    @field_validator("stylesheet")
    @classmethod
    def _resolve_stylesheet(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _compiles(self) -> XsltSpec:
        if (self.stylesheet is None) == (self.inline is None):
            raise ValueError("give stylesheet: (a file) or inline: (the stylesheet itself), not both")
        if self.stylesheet is not None:
            try:
                source = self.stylesheet.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {self.stylesheet}: {exc.strerror or exc}") from None
        else:
            source = self.inline.encode("utf-8")
        _, declared = compile_stylesheet(source, self._base_url)
        unknown = sorted(set(self.parameters) - declared)
        if unknown:
            raise ValueError(
                f"parameters {', '.join(unknown)} are not declared by the stylesheet"
                f" (its top-level xsl:param: {', '.join(sorted(declared)) or 'none'})"
            )
        self._source = source
        return self

    @property
    def _base_url(self) -> str | None:
        return None if self.stylesheet is None else str(self.stylesheet)

    @property
    def compiled(self) -> etree.XSLT:
        """The stylesheet, compiled (once per load: a cache keyed by its text)."""
        return compile_stylesheet(self._source, self._base_url)[0]

    @property
    def origin(self) -> str:
        """Where the stylesheet comes from, for messages: its file name, or ``inline``."""
        return self.stylesheet.name if self.stylesheet is not None else "inline"


class XPathReadSpec(Frozen):
    """``xpath``: write what ``select`` gives on the message's v2.xml (as text) to the field ``to``."""

    select: XPathText
    to: WritablePath


class RenameSegmentSpec(Frozen):
    """``rename_segment``: give every occurrence of a segment another ID."""

    from_: BodySegmentName = Field(alias="from")
    to: BodySegmentName


_TRANSFORMS = (
    "set_", "copy_", "delete", "map_", "replace", "date_", "case", "trim", "add_segment",
    "remove_segment", "rename_segment", "split", "join", "set_version", "python", "xslt", "xpath",
)  # fmt: skip


class TransformSpec(Frozen):
    """One transform: exactly one key naming what to do."""

    set_: SetSpec | None = Field(None, alias="set")
    copy_: CopySpec | None = Field(None, alias="copy")
    delete: DeleteSpec | None = None
    map_: MapSpec | None = Field(None, alias="map")
    replace: ReplaceSpec | None = None
    date_: DateSpec | None = Field(None, alias="date")
    case: CaseSpec | None = None
    trim: FieldSpec | None = None
    add_segment: AddSegmentSpec | None = None
    remove_segment: RemoveSegmentSpec | None = None
    rename_segment: RenameSegmentSpec | None = None
    split: RepetitionsSpec | None = None
    join: RepetitionsSpec | None = None
    set_version: Annotated[Text, AfterValidator(check_version)] | None = None
    python: PythonTarget | None = None
    xslt: XsltSpec | None = None
    xpath: XPathReadSpec | None = None

    @model_validator(mode="after")
    def _one_transform(self) -> TransformSpec:
        given = given_keys(self, _TRANSFORMS)
        if len(given) != 1:
            names = ", ".join(type(self).model_fields[key].alias or key for key in _TRANSFORMS)
            raise ValueError(f"give exactly one of {names} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        """The YAML key of this transform (``set``, ``map``, ``python`` ...)."""
        return given_keys(self, _TRANSFORMS)[0]

    @property
    def options(self) -> Any:
        """The value under that key: a sub-model, or the text of ``set_version`` and ``python``."""
        return next(getattr(self, key) for key in _TRANSFORMS if getattr(self, key) is not None)


# ---------------------------------------------------------------------------------------------
# Lookup tables


class TableSpec(Frozen):
    """A lookup table: ``inline`` entries, or a CSV file and two of its columns.

    A ``csv`` path is relative to the config's folder.
    """

    inline: Annotated[dict[Text, Text], AfterValidator(check_not_empty)] | None = None
    csv: NonEmptyText | None = None
    key: NonEmptyText | None = None
    value: NonEmptyText | None = None

    @model_validator(mode="after")
    def _inline_or_csv(self) -> TableSpec:
        if (self.inline is None) == (self.csv is None):
            raise ValueError(
                "give inline: (a mapping of entries) or csv: (a file with key: and value: columns), not both"
            )
        if self.csv is not None:
            missing = [name for name in ("key", "value") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"csv: needs {' and '.join(missing)}: the header names of the column(s) to use"
                )
            if self.key == self.value:
                raise ValueError(f"key and value must be different columns (both are {self.key!r})")
        else:
            extra = [name for name in ("key", "value") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"{' and '.join(extra)} only go with csv:, not with inline:")
        return self
