"""Filters: the tests a message must pass to go on; a message that fails one is FILTERED with the reason.

A filter is a condition built once from its spec (paths parsed, regular expressions compiled). A
condition answers two questions: does it hold, and why (a sentence that states its truth as it is,
e.g. "MSH-4 'WEST' not in [NORTH, SOUTH]"). The reason is asked for only when a message is
filtered out, so the passing path does no string work.

The reason names field values: it is stored with the message and shown to operators, who may see
the message anyway, but it must never be logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from engine.hl7.dtm import parse_dtm
from engine.hl7.message import Message, parse_path
from engine.transforms.spec import FilterSpec
from engine.transforms.stages import Filter
from engine.transforms.xml import XPathCondition

__all__ = ["build_filters"]

_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")
_LISTED_VALUES = 5  # how many values an "occurrence: any" reason lists
_SHOWN_CHARS = 60  # how much of a value a reason shows (an OBX-5 may be a whole PDF)


def build_filters(specs: Sequence[FilterSpec], *, path: str) -> list[Filter]:
    """One Filter per spec, named by its YAML path: ``f"{path}[{i}]"``."""
    return [_ConditionFilter(f"{path}[{index}]", _condition(spec)) for index, spec in enumerate(specs)]


class _ConditionFilter:
    """A Filter that passes a message when its condition holds."""

    __slots__ = ("name", "_condition")

    def __init__(self, name: str, condition: _Condition):
        self.name = name
        self._condition = condition

    def __repr__(self) -> str:
        return f"<Filter {self.name}>"

    def check(self, message: Message) -> str | None:
        """None when the message passes; otherwise why it is filtered out."""
        if self._condition.holds(message):
            return None
        return f"{self.name}: {self._condition.why(message)}"


class _Condition(Protocol):
    def holds(self, message: Message) -> bool:
        """True when the message meets the condition."""

    def why(self, message: Message) -> str:
        """A sentence saying whether and why the condition holds for this message."""


def _condition(spec: FilterSpec) -> _Condition:
    if spec.any_ is not None:
        return _Any([_condition(child) for child in spec.any_])
    if spec.all_ is not None:
        return _All([_condition(child) for child in spec.all_])
    if spec.not_ is not None:
        return _Not(_condition(spec.not_))
    if spec.xpath is not None:
        return XPathCondition(spec.xpath)
    condition = {"first": _First, "any": _AnyOccurrence, "all": _AllOccurrences}[spec.occurrence or "first"]
    return condition(spec.field, _value_test(spec))


# ---------------------------------------------------------------------------------------------
# any / all / not


class _Any:
    __slots__ = ("_children",)

    def __init__(self, children: list[_Condition]):
        self._children = children

    def holds(self, message: Message) -> bool:
        return any(child.holds(message) for child in self._children)

    def why(self, message: Message) -> str:
        for child in self._children:
            if child.holds(message):
                return child.why(message)
        return "none of: " + "; ".join(child.why(message) for child in self._children)


class _All:
    __slots__ = ("_children",)

    def __init__(self, children: list[_Condition]):
        self._children = children

    def holds(self, message: Message) -> bool:
        return all(child.holds(message) for child in self._children)

    def why(self, message: Message) -> str:
        for child in self._children:
            if not child.holds(message):
                return child.why(message)
        return "all of: " + "; ".join(child.why(message) for child in self._children)


class _Not:
    __slots__ = ("_child",)

    def __init__(self, child: _Condition):
        self._child = child

    def holds(self, message: Message) -> bool:
        return not self._child.holds(message)

    def why(self, message: Message) -> str:
        return self._child.why(message)


# ---------------------------------------------------------------------------------------------
# Tests of one value


class _ValueTest(Protocol):
    claim: str  # what a passing value is, e.g. "equals 'PMS'"

    def accepts(self, value: str) -> bool:
        """True when the value passes."""

    def explain(self, value: str) -> str:
        """What the value is, in the words of the test: "equals 'PMS'", "is not a number"."""


class _Equals:
    __slots__ = ("_expected", "claim", "_denial")

    def __init__(self, expected: str):
        self._expected = expected
        self.claim = f"equals {expected!r}"
        self._denial = f"is not {expected!r}"

    def accepts(self, value: str) -> bool:
        return value == self._expected

    def explain(self, value: str) -> str:
        return self.claim if value == self._expected else self._denial


class _In:
    __slots__ = ("_allowed", "claim", "_denial")

    def __init__(self, allowed: Sequence[str]):
        self._allowed = frozenset(allowed)
        listed = f"[{', '.join(allowed)}]"
        self.claim = f"in {listed}"
        self._denial = f"not in {listed}"

    def accepts(self, value: str) -> bool:
        return value in self._allowed

    def explain(self, value: str) -> str:
        return self.claim if value in self._allowed else self._denial


class _Matches:
    __slots__ = ("_search", "claim", "_denial")

    def __init__(self, pattern: str):
        self._search = re.compile(pattern).search
        self.claim = f"matches {pattern!r}"
        self._denial = f"does not match {pattern!r}"

    def accepts(self, value: str) -> bool:
        return self._search(value) is not None

    def explain(self, value: str) -> str:
        return self.claim if self._search(value) is not None else self._denial


_ABSENT = frozenset({"", '""'})  # the HL7 null "" says "no value" too


class _Present:
    __slots__ = ("_wanted", "claim")

    def __init__(self, wanted: bool):
        self._wanted = wanted
        self.claim = "is present" if wanted else "is absent or empty"

    def accepts(self, value: str) -> bool:
        return (value not in _ABSENT) is self._wanted

    def explain(self, value: str) -> str:
        return "is absent or empty" if value in _ABSENT else "is present"


def _number(value: str) -> Decimal | None:
    return Decimal(value) if _NUMBER.fullmatch(value) else None


def _show_number(number: Decimal) -> str:
    return format(number, "f")


class _NumberRange:
    __slots__ = ("_lower", "_lower_inclusive", "_upper", "_upper_inclusive", "claim", "_denial")

    def __init__(self, spec: FilterSpec):
        self._lower_inclusive = spec.greater_than is None
        self._lower = spec.at_least if self._lower_inclusive else spec.greater_than
        self._upper_inclusive = spec.less_than is None
        self._upper = spec.at_most if self._upper_inclusive else spec.less_than
        bounds = []
        if self._lower is not None:
            bounds.append(
                f"{'at least' if self._lower_inclusive else 'greater than'} {_show_number(self._lower)}"
            )
        if self._upper is not None:
            bounds.append(
                f"{'at most' if self._upper_inclusive else 'less than'} {_show_number(self._upper)}"
            )
        self.claim = "is " + " and ".join(bounds)
        self._denial = "is not " + " and ".join(bounds)

    def accepts(self, value: str) -> bool:
        number = _number(value)
        if number is None:
            return False
        if self._lower is not None and (
            number < self._lower if self._lower_inclusive else number <= self._lower
        ):
            return False
        return self._upper is None or (
            number <= self._upper if self._upper_inclusive else number < self._upper
        )

    def explain(self, value: str) -> str:
        if _number(value) is None:
            return "is not a number"
        return self.claim if self.accepts(value) else self._denial


def _show_moment(moment: datetime) -> str:
    if moment.tzinfo is None and moment.time() == datetime.min.time():
        return moment.date().isoformat()
    return moment.isoformat()


class _DateRange:
    """after/before: a DTM value is compared at the start of its precision ("1999" is 1999-01-01T00:00).

    When both the value and the bound carry a UTC offset they are compared as instants; otherwise as
    wall-clock times, offsets ignored.
    """

    __slots__ = ("_after", "_before", "claim", "_denial")

    def __init__(self, spec: FilterSpec):
        self._after = spec.after
        self._before = spec.before
        bounds = []
        if spec.after is not None:
            bounds.append(f"after {_show_moment(spec.after)}")
        if spec.before is not None:
            bounds.append(f"before {_show_moment(spec.before)}")
        self.claim = "is " + " and ".join(bounds)
        self._denial = "is not " + " and ".join(bounds)

    def accepts(self, value: str) -> bool:
        moment = parse_dtm(value)
        if moment is None:
            return False
        when = moment.value
        return (self._after is None or _later(when, self._after)) and (
            self._before is None or _later(self._before, when)
        )

    def explain(self, value: str) -> str:
        if parse_dtm(value) is None:
            return "is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])"
        return self.claim if self.accepts(value) else self._denial


def _later(first: datetime, second: datetime) -> bool:
    if first.tzinfo is None or second.tzinfo is None:
        return first.replace(tzinfo=None) > second.replace(tzinfo=None)
    return first > second


def _value_test(spec: FilterSpec) -> _ValueTest:
    if spec.equals is not None:
        return _Equals(spec.equals)
    if spec.in_ is not None:
        return _In(spec.in_)
    if spec.matches is not None:
        return _Matches(spec.matches)
    if spec.exists is not None:
        return _Present(spec.exists)
    if spec.empty is not None:
        return _Present(not spec.empty)
    if spec.after is not None or spec.before is not None:
        return _DateRange(spec)
    return _NumberRange(spec)


# ---------------------------------------------------------------------------------------------
# Which values of a message a field test looks at


def _show(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + "...'"


class _First:
    """The value ``Message.get`` reads: the first occurrence and repetition unless the path says."""

    __slots__ = ("_path", "_test")

    def __init__(self, path: str, test: _ValueTest):
        self._path = str(parse_path(path))
        self._test = test

    def holds(self, message: Message) -> bool:
        return self._test.accepts(message.get(self._path))

    def why(self, message: Message) -> str:
        value = message.get(self._path)
        return f"{self._path} {_show(value)} {self._test.explain(value)}"


class _Occurrences:
    """Every value the path can mean: each occurrence of the segment (unless the path names one),
    times each repetition of the field (unless the path names one). An absent segment or field
    counts as one empty value, so a test of "" answers the same as with occurrence: first.
    """

    __slots__ = ("_path", "_test", "_segment", "_occurrence", "_field", "_repetition", "_rest")

    def __init__(self, path: str, test: _ValueTest):
        where = parse_path(path)
        self._path = str(where)
        self._test = test
        self._segment = where.segment
        self._occurrence = where.occurrence
        self._field = where.field
        self._repetition = where.repetition
        self._rest = "".join(
            f".{index}" for index in (where.component, where.subcomponent) if index is not None
        )

    def values(self, message: Message) -> Iterator[tuple[str, str]]:
        """(path of the value, value) for every value the path ranges over."""
        if self._occurrence is None:
            segments = list(enumerate(message.segments_named(self._segment), start=1))
        else:
            found = message.segment(self._segment, self._occurrence)
            segments = [(self._occurrence, found)] if found is not None else []
        if not segments:
            yield self._path, ""
            return
        separator = message.delimiters.repetition
        name_occurrence = self._occurrence is not None or len(segments) > 1
        for occurrence, segment in segments:
            where = (
                f"{self._segment}[{occurrence}]-{self._field}"
                if name_occurrence
                else f"{self._segment}-{self._field}"
            )
            if self._repetition is not None:
                repetitions = [self._repetition]
            elif segment.is_header and self._field <= 2:
                repetitions = [None]
            else:
                count = segment.field(self._field).count(separator) + 1
                repetitions = range(1, count + 1) if count > 1 else [None]
            for repetition in repetitions:
                path = where if repetition is None else f"{where}[{repetition}]"
                yield path + self._rest, message.get(path + self._rest)


class _AnyOccurrence(_Occurrences):
    __slots__ = ()

    def holds(self, message: Message) -> bool:
        accepts = self._test.accepts
        return any(accepts(value) for _, value in self.values(message))

    def why(self, message: Message) -> str:
        seen = []
        for path, value in self.values(message):
            if self._test.accepts(value):
                return f"{path} {_show(value)} {self._test.explain(value)}"
            seen.append(f"{path} {_show(value)}")
        listed = ", ".join(seen[:_LISTED_VALUES])
        if len(seen) > _LISTED_VALUES:
            listed += f" and {len(seen) - _LISTED_VALUES} more"
        return f"no {self._path} {self._test.claim}: {listed}"


class _AllOccurrences(_Occurrences):
    __slots__ = ()

    def holds(self, message: Message) -> bool:
        accepts = self._test.accepts
        return all(accepts(value) for _, value in self.values(message))

    def why(self, message: Message) -> str:
        count = 0
        for path, value in self.values(message):
            if not self._test.accepts(value):
                return f"{path} {_show(value)} {self._test.explain(value)}"
            count += 1
        return f"every {self._path} {self._test.claim} ({count} value{'s' if count != 1 else ''})"
