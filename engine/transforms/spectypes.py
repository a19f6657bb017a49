"""The value types of the filters' and transforms' YAML (engine.transforms.spec): each checked at config time.

Text that YAML must not have read as a number or a date, field paths (readable, writable, a whole
field), segment IDs and segment text, regular expressions, XPath, numbers and date bounds, strftime
formats, XSLT parameter names and Python targets. Each is an ``Annotated`` type whose validator
raises ValueError with what was expected, so pydantic reports it at its YAML path.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from lxml import etree
from pydantic import AfterValidator, BeforeValidator

from engine.configtypes import Frozen, check_not_empty
from engine.hl7.message import HEADER_SEGMENTS, parse_path
from engine.transforms.xml import compile_xpath

__all__ = [
    "BodySegmentName",
    "DateBound",
    "DateFormat",
    "FieldPathText",
    "NonEmptyText",
    "Number",
    "ParseFormat",
    "PythonTarget",
    "Regex",
    "SegmentName",
    "SegmentText",
    "Text",
    "WholeFieldPath",
    "WritablePath",
    "XPathText",
    "XmlName",
    "format_precision",
    "given_keys",
]


def _require_text(value: Any) -> Any:
    # YAML reads 007 as 7, 2.10 as 2.1 and an unquoted date as a date: a text value must be quoted,
    # or the filter would silently compare with something the analyst did not write.
    if isinstance(value, bool):
        read_as = "true" if value else "false"
    elif isinstance(value, int | float | Decimal):
        read_as = f"the number {value!r}"
    elif isinstance(value, date):
        read_as = f"the date {value.isoformat()}"
    else:
        return value
    raise ValueError(f"must be text: put the value in quotes (YAML read it as {read_as})")


Text = Annotated[str, BeforeValidator(_require_text)]
NonEmptyText = Annotated[Text, AfterValidator(check_not_empty)]


def _check_path(value: str) -> str:
    parse_path(value)  # its ValueError names the path and the expected grammar
    return value


def _check_writable_path(value: str) -> str:
    where = parse_path(value)
    if where.segment in HEADER_SEGMENTS and where.field <= 2:
        raise ValueError(
            f"{where.segment}-1 and {where.segment}-2 are the message's delimiters;"
            f" they cannot be changed (got {value!r})"
        )
    return value


def _check_whole_field(value: str) -> str:
    where = parse_path(value)
    if (where.repetition, where.component, where.subcomponent) != (None, None, None):
        raise ValueError(
            f"must name a whole field such as {where.segment}-{where.field},"
            f" without [repetition] or components (got {value!r})"
        )
    return value


FieldPathText = Annotated[Text, AfterValidator(_check_path)]
WritablePath = Annotated[Text, AfterValidator(_check_path), AfterValidator(_check_writable_path)]
WholeFieldPath = Annotated[WritablePath, AfterValidator(_check_whole_field)]


def _check_segment_name(value: str) -> str:
    if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", value):
        raise ValueError(
            f"must be a segment ID: an upper-case letter and two upper-case letters or digits (got {value!r})"
        )
    return value


def _check_body_segment(value: str) -> str:
    if value in HEADER_SEGMENTS:
        raise ValueError(f"{value} is a header segment; it cannot be added, removed or renamed")
    return value


SegmentName = Annotated[Text, AfterValidator(_check_segment_name)]
BodySegmentName = Annotated[SegmentName, AfterValidator(_check_body_segment)]


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


Regex = Annotated[Text, AfterValidator(_check_regex)]


def _check_xpath(value: str) -> str:
    compile_xpath(value)  # its ValueError names the problem
    return value


XPathText = Annotated[Text, AfterValidator(_check_xpath)]


def _to_number(value: Any) -> Any:
    # Decimal, not float: a bound and a value compare exactly as written (0.1 is 0.1).
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"must be a number such as 100 or 7.5 (got {value!r})")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be a number such as 100 or 7.5 (got {value!r})") from None
    if not number.is_finite():
        raise ValueError(f"must be a finite number (got {value!r})")
    return number


Number = Annotated[Decimal, BeforeValidator(_to_number)]


def _to_datetime(value: Any) -> Any:
    # YAML may already have read an unquoted 2000-01-01 as a date.
    if isinstance(value, datetime):
        return datetime.combine(value.date(), value.timetz())  # a plain datetime, not ruamel's TimeStamp
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(
        "must be an ISO date or date-time such as 2000-01-01, 2000-01-01T08:30"
        f" or 2000-01-01T08:30:00+01:00 (got {value!r})"
    )


DateBound = Annotated[datetime, BeforeValidator(_to_datetime)]


# A strftime directive and the HL7 DTM digits it needs (4 year ... 14 seconds); %f and %z add nothing.
_DIRECTIVE_DIGITS = {
    **dict.fromkeys("YyGC", 4),
    **dict.fromkeys("mbBh", 6),
    **dict.fromkeys("djaAwuUWVxDFe", 8),
    **dict.fromkeys("HIpkl", 10),
    **dict.fromkeys("MR", 12),
    **dict.fromkeys("SsTXcr", 14),
}
_DIRECTIVE = re.compile(r"%(.)", re.DOTALL)


def format_precision(fmt: str) -> int:
    """The HL7 DTM digits (4 year, 6 month, 8 day, 10 hour, 12 minute, 14 second) a strftime format uses."""
    return max((_DIRECTIVE_DIGITS.get(code, 0) for code in _DIRECTIVE.findall(fmt)), default=0)


_SAMPLE_MOMENT = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)


def _check_date_format(value: str) -> str:
    if value == "hl7":
        return value
    if "%" not in value:
        raise ValueError(f"must be 'hl7' or a strftime format such as '%Y-%m-%d' (got {value!r})")
    try:
        _SAMPLE_MOMENT.strftime(value)
    except ValueError as exc:
        raise ValueError(f"invalid strftime format {value!r}: {exc}") from None
    return value


def _check_parse_format(value: str) -> str:
    if value == "hl7":
        return value
    if not re.search(r"%[Yy]", value.replace("%%", "")):
        raise ValueError(f"a format to read dates with must contain the year (%Y or %y) (got {value!r})")
    try:
        datetime.strptime(_SAMPLE_MOMENT.strftime(value), value)
    except ValueError as exc:
        raise ValueError(f"cannot read dates with {value!r}: {exc}") from None
    return value


DateFormat = Annotated[Text, AfterValidator(_check_date_format)]
ParseFormat = Annotated[DateFormat, AfterValidator(_check_parse_format)]


def _check_segment_text(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be one segment, without line breaks")
    name = value.split("|", 1)[0]
    _check_segment_name(name)
    _check_body_segment(name)
    return value


SegmentText = Annotated[Text, AfterValidator(_check_segment_text)]


def _check_xml_name(value: str) -> str:
    try:
        etree.QName(value)
    except ValueError:
        raise ValueError(f"must be an XSLT parameter name (got {value!r})") from None
    return value


XmlName = Annotated[str, AfterValidator(_check_xml_name)]


def _check_python_target(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", value):
        raise ValueError(f"must be package.module:function (got {value!r})")
    return value


PythonTarget = Annotated[Text, AfterValidator(_check_python_target)]


def given_keys(model: Frozen, keys: tuple[str, ...]) -> list[str]:
    """The YAML keys among ``keys`` (field names) that were given a value, as written in YAML."""
    fields = type(model).model_fields
    return [fields[key].alias or key for key in keys if getattr(model, key) is not None]
