"""Value transforms: set, set_version, map, replace, date, case, trim and copy.

Each reads one value through ``Message.get`` (unescaped) and writes its new value through
``Message.set`` (escaped); none adds a segment to change a value that is not there. ``copy`` of a
value with components into a whole field or repetition keeps them, rebuilding that field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from engine.errors import ConfigError
from engine.hl7.dtm import HL7DateTime, format_dtm, parse_dtm
from engine.hl7.message import Message, parse_path
from engine.transforms.lookup import LookupTable
from engine.transforms.spectypes import format_precision
from engine.transforms.step import Step, with_field, write

__all__ = ["Case", "Copy", "Date", "Map", "Replace", "Set", "Trim", "build_set", "build_set_version"]


class Set(Step):
    """set and set_version: write a fixed value."""

    __slots__ = ("_path", "_value")

    def __init__(self, name: str, label: str, path: str, value: str):
        super().__init__(name, label)
        self._path = path
        self._value = value

    def _apply(self, message: Message) -> Message:
        write(message, self._path, self._value)
        return message


def build_set(name: str, spec, tables) -> Set:
    """``set``: write the spec's value at its field."""
    return Set(name, f"set {spec.field}", spec.field, spec.value)


def build_set_version(name: str, version: str, tables) -> Set:
    """``set_version``: write the version into MSH-12."""
    # MSH-12 is a VID (version ^ internationalization code ^ ...): only the version changes.
    return Set(name, f"set_version {version}", "MSH-12.1", version)


class _Leaf:
    """Reads the value at a path and knows whether it is a single value or has components inside."""

    __slots__ = ("path", "where", "_first_leaf")

    def __init__(self, path: str):
        self.where = parse_path(path)
        self.path = str(self.where)
        if self.where.subcomponent is not None:
            self._first_leaf = None
        elif self.where.component is not None:
            self._first_leaf = f"{self.path}.1"
        else:
            self._first_leaf = f"{self.path}.1.1"

    def read(self, message: Message) -> tuple[str, bool]:
        """(value, composite): the unescaped value, or the raw text when the part has components inside."""
        value = message.get(self.path)
        if self._first_leaf is None:
            return value, False
        d = message.delimiters
        if d.component in value or (d.subcomponent is not None and d.subcomponent in value):
            # get() returns raw text above the leaf level; an unescaped leaf may contain the same
            # characters (from \S\ or \T\), but only raw text differs from its own first leaf.
            return value, message.get(self._first_leaf) != value
        return value, False

    def segment_absent(self, message: Message) -> bool:
        """True when the message has no such segment occurrence."""
        return message.segment(self.where.segment, self.where.occurrence or 1) is None

    def composite_error(self) -> str:
        """Why a value transform cannot change this part, and what to write instead."""
        return f"{self.path} has components inside; name one of them, e.g. {self.path}.1"


class _ValueStep(Step):
    """map, replace, date, case, trim: read one value, compute a new one, write it if it changed.

    They never add a segment: when the segment is absent, nothing happens.
    """

    __slots__ = ("_leaf",)

    def __init__(self, name: str, label: str, path: str):
        super().__init__(name, f"{label} {path}")
        self._leaf = _Leaf(path)

    def _apply(self, message: Message) -> Message:
        value, composite = self._leaf.read(message)
        if composite:
            raise self.error(self._leaf.composite_error())
        if value == "" and self._leaf.segment_absent(message):
            return message
        new = self._convert(value)
        if new != value:
            message.set(self._leaf.path, new)
        return message

    def _convert(self, value: str) -> str:
        raise NotImplementedError


_NO_VALUE = frozenset({"", '""'})  # empty, or the HL7 null ""


class Map(_ValueStep):
    """``map``: the value looked up in a table; a miss keeps it, writes a default, or is an error."""

    __slots__ = ("_table", "_on_miss", "_default")

    def __init__(self, name: str, spec, tables: Mapping[str, LookupTable]):
        super().__init__(name, "map", spec.field)
        if spec.table not in tables:
            raise ConfigError([f"{name}.map.table: no table named {spec.table!r}"])
        self._table = tables[spec.table]
        self._on_miss = spec.on_miss
        self._default = spec.default

    def _convert(self, value: str) -> str:
        found = self._table.lookup(value)
        if found is not None:
            return found
        if value in _NO_VALUE or self._on_miss == "keep":  # no value is never a miss
            return value
        if self._on_miss == "default":
            return self._default
        raise self.error(f"no entry for {value!r} in table {self._table.name}")


class Replace(_ValueStep):
    """``replace``: every match of a regular expression replaced."""

    __slots__ = ("_pattern", "_with")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "replace", spec.field)
        self._pattern = re.compile(spec.pattern)
        self._with = spec.with_

    def _convert(self, value: str) -> str:
        return self._pattern.sub(self._with, value)


_PRECISION_NAMES = {6: "month", 8: "day", 10: "hour", 12: "minute", 14: "second"}  # by DTM digits


class Date(_ValueStep):
    """``date``: a date/time read in one format ('hl7' or strftime) and written in another."""

    __slots__ = ("_from", "_from_digits", "_from_fraction_digits", "_to", "_to_digits")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "date", spec.field)
        self._from = spec.from_
        self._from_digits = format_precision(spec.from_)
        self._from_fraction_digits = 4 if "%f" in spec.from_.replace("%%", "") else 0  # HL7 allows 4
        self._to = spec.to
        self._to_digits = format_precision(spec.to)

    def _convert(self, value: str) -> str:
        if value in _NO_VALUE:
            return value
        moment = self._read(value)
        if self._to == "hl7":
            return format_dtm(moment)
        if moment.digits < self._to_digits:
            missing = _PRECISION_NAMES[min(d for d in _PRECISION_NAMES if d > moment.digits)]
            raise self.error(f"{value!r} has no {missing}; it cannot be written as {self._to!r}")
        return moment.value.strftime(self._to)

    def _read(self, value: str) -> HL7DateTime:
        if self._from == "hl7":
            moment = parse_dtm(value)
            if moment is None:
                raise self.error(f"{value!r} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
            return moment
        try:
            parsed = datetime.strptime(value, self._from)
        except ValueError:
            raise self.error(f"{value!r} does not match the format {self._from!r}") from None
        return HL7DateTime(parsed, self._from_digits, self._from_fraction_digits, parsed.tzinfo is not None)


class Case(_ValueStep):
    """``case``: the value in upper, lower or title case."""

    __slots__ = ("_change",)

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "case", spec.field)
        self._change = {"upper": str.upper, "lower": str.lower, "title": str.title}[spec.to]

    def _convert(self, value: str) -> str:
        return self._change(value)


class Trim(_ValueStep):
    """``trim``: the value without blanks around it."""

    __slots__ = ()

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "trim", spec.field)

    def _convert(self, value: str) -> str:
        return value.strip()


class Copy(Step):
    """Copies a single value through get/set; a value with components keeps them when ``to`` is a
    whole field or repetition (written as raw text), and is an error when ``to`` is a component.
    """

    __slots__ = ("_from", "_to")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"copy {spec.from_} to {spec.to}")
        self._from = _Leaf(spec.from_)
        self._to = parse_path(spec.to)

    def _apply(self, message: Message) -> Message:
        value, composite = self._from.read(message)
        to = self._to
        if not composite:
            write(message, str(to), value)
            return message
        if to.component is not None:
            raise self.error(
                f"{self._from.path} has components inside; copy it to a whole field or repetition"
                f" such as {to.segment}-{to.field}, or copy one component"
            )
        segment = message.segment(to.segment, to.occurrence or 1)
        if segment is None:
            message.set(str(to), "")  # adds the segment (and any missing occurrences before it)
            segment = message.segment(to.segment, to.occurrence or 1)
        separator = message.delimiters.repetition
        repetitions = segment.field(to.field).split(separator)
        index = (to.repetition or 1) - 1
        repetitions.extend([""] * (index + 1 - len(repetitions)))
        repetitions[index] = value
        return with_field(message, segment, to.field, separator.join(repetitions))
