"""Transforms: the changes a channel makes to a message, applied in order; one that fails raises TransformError.

Every transform is built once from its spec (paths parsed, regular expressions compiled, tables and
Python functions resolved) and then only reads and writes the message through ``Message.get`` and
``Message.set`` (values are unescaped when read and escaped when written). Three kinds of change
have no ``Message`` method and rebuild the message from its segment texts instead: replacing a
whole field with all its repetitions (``delete``, ``split``, ``join``, ``copy`` of a composite
value), and adding, removing or renaming segments.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache

from engine.channels.stages import Transform
from engine.errors import ConfigError, HL7Error, TransformError
from engine.hl7.dtm import HL7DateTime, format_dtm, parse_dtm
from engine.hl7.message import (
    Delimiters,
    Message,
    Segment,
    escape,
    parse_path,
    unescape,
)
from engine.transforms.lookup import LookupTable
from engine.transforms.spec import TransformSpec, format_precision

__all__ = ["build_transforms", "check_transforms"]

Problem = tuple[tuple, str]


def build_transforms(
    specs: Sequence[TransformSpec], *, path: str, tables: Mapping[str, LookupTable]
) -> list[Transform]:
    """One Transform per spec, named by its YAML path ``f"{path}[{i}]"``.

    Expects specs that passed ``check_transforms``; otherwise raises ConfigError.
    """
    return [
        _BUILDERS[spec.kind](f"{path}[{index}]", spec.options, tables) for index, spec in enumerate(specs)
    ]


def check_transforms(
    specs: Sequence[TransformSpec], *, path_loc: tuple, table_names: set[str]
) -> list[Problem]:
    """Problems between transforms and the rest of the config: unknown tables, Python targets that do not import."""
    problems: list[Problem] = []
    known = ", ".join(sorted(table_names)) or "(none)"
    for index, spec in enumerate(specs):
        if spec.kind == "map" and spec.map_.table not in table_names:
            problems.append(
                (path_loc + (index, "map", "table"), f"no table named {spec.map_.table!r}; known: {known}")
            )
        elif spec.kind == "python":
            try:
                _import_target(spec.python)
            except ValueError as exc:
                problems.append((path_loc + (index, "python"), str(exc)))
    return problems


# ---------------------------------------------------------------------------------------------
# The steps


class _Step:
    """What every transform shares: its name (YAML path), a label for errors, and error wrapping."""

    __slots__ = ("name", "_label")

    def __init__(self, name: str, label: str):
        self.name = name
        self._label = label

    def __repr__(self) -> str:
        return f"<Transform {self.name} ({self._label})>"

    def error(self, reason: str) -> TransformError:
        """A TransformError naming this transform: ``channels[0].transforms[3] (map PV1-3.1): reason``."""
        return TransformError(f"{self.name} ({self._label}): {reason}")

    def apply(self, message: Message) -> Message:
        """The transformed message (often the same object, changed). Raises TransformError."""
        try:
            return self._apply(message)
        except (ValueError, HL7Error) as exc:  # Message.set cannot write this value into this message
            raise self.error(str(exc)) from exc

    def _apply(self, message: Message) -> Message:
        raise NotImplementedError


class _Set(_Step):
    """set and set_version: write a fixed value."""

    __slots__ = ("_path", "_value")

    def __init__(self, name: str, label: str, path: str, value: str):
        super().__init__(name, label)
        self._path = path
        self._value = value

    def _apply(self, message: Message) -> Message:
        _write(message, self._path, self._value)
        return message


def _build_set(name: str, spec, tables) -> _Set:
    return _Set(name, f"set {spec.field}", spec.field, spec.value)


def _build_set_version(name: str, version: str, tables) -> _Set:
    # MSH-12 is a VID (version ^ internationalization code ^ ...): only the version changes.
    return _Set(name, f"set_version {version}", "MSH-12.1", version)


def _write(message: Message, path: str, value: str) -> None:
    """``Message.set``, except that writing '' where there is nothing adds no segment or delimiters."""
    if value or message.get(path):
        message.set(path, value)


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


class _ValueStep(_Step):
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


class _Map(_ValueStep):
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


class _Replace(_ValueStep):
    __slots__ = ("_pattern", "_with")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "replace", spec.field)
        self._pattern = re.compile(spec.pattern)
        self._with = spec.with_

    def _convert(self, value: str) -> str:
        return self._pattern.sub(self._with, value)


_PRECISION_NAMES = {6: "month", 8: "day", 10: "hour", 12: "minute", 14: "second"}  # by DTM digits


class _Date(_ValueStep):
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


class _Case(_ValueStep):
    __slots__ = ("_change",)

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "case", spec.field)
        self._change = {"upper": str.upper, "lower": str.lower, "title": str.title}[spec.to]

    def _convert(self, value: str) -> str:
        return self._change(value)


class _Trim(_ValueStep):
    __slots__ = ()

    def __init__(self, name: str, spec, tables):
        super().__init__(name, "trim", spec.field)

    def _convert(self, value: str) -> str:
        return value.strip()


class _Copy(_Step):
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
            _write(message, str(to), value)
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
        return _with_field(message, segment, to.field, separator.join(repetitions))


class _Delete(_Step):
    """A path without repetition or component empties the whole field (every repetition);
    ``PID-3[2]`` removes that repetition (the later ones move up); a component or subcomponent
    is emptied. An absent segment stays absent.
    """

    __slots__ = ("_path", "_where")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"delete {spec.field}")
        self._where = parse_path(spec.field)
        self._path = str(self._where)

    def _apply(self, message: Message) -> Message:
        where = self._where
        segment = message.segment(where.segment, where.occurrence or 1)
        if segment is None:
            return message
        if where.component is not None:
            _write(message, self._path, "")
            return message
        raw = segment.field(where.field)
        separator = message.delimiters.repetition
        if where.repetition is None:
            if separator not in raw:
                _write(message, self._path, "")
                return message
            return _with_field(message, segment, where.field, "")
        repetitions = raw.split(separator)
        if where.repetition > len(repetitions):
            return message
        del repetitions[where.repetition - 1]
        return _with_field(message, segment, where.field, separator.join(repetitions))


class _Split(_Step):
    """Every repetition whose text contains the separator becomes one repetition per piece; empty
    pieces are dropped. A repetition with components cannot be split.
    """

    __slots__ = ("_where", "_separator")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"split {spec.field}")
        self._where = parse_path(spec.field)
        self._separator = spec.separator

    def _apply(self, message: Message) -> Message:
        where = self._where
        segment = message.segment(where.segment, where.occurrence or 1)
        if segment is None:
            return message
        d = message.delimiters
        repetitions, changed = [], False
        for repetition in segment.field(where.field).split(d.repetition):
            value = unescape(repetition, d)
            if self._separator not in value:
                repetitions.append(repetition)
                continue
            if _has_components(repetition, d):
                raise self.error(f"{where} has components; split works on fields of single values")
            repetitions += [escape(piece, d) for piece in value.split(self._separator) if piece]
            changed = True
        if not changed:
            return message
        return _with_field(message, segment, where.field, d.repetition.join(repetitions))


class _Join(_Step):
    """All non-empty repetitions become one value, joined by the separator."""

    __slots__ = ("_where", "_separator")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"join {spec.field}")
        self._where = parse_path(spec.field)
        self._separator = spec.separator

    def _apply(self, message: Message) -> Message:
        where = self._where
        segment = message.segment(where.segment, where.occurrence or 1)
        if segment is None:
            return message
        d = message.delimiters
        raw = segment.field(where.field)
        if d.repetition not in raw:
            return message
        repetitions = raw.split(d.repetition)
        if any(_has_components(repetition, d) for repetition in repetitions):
            raise self.error(f"{where} has components; join works on fields of single values")
        # Joining the escaped texts with the escaped separator keeps every escape sequence as it was.
        joined = escape(self._separator, d).join(repetition for repetition in repetitions if repetition)
        return _with_field(message, segment, where.field, joined)


def _has_components(raw: str, d: Delimiters) -> bool:
    return d.component in raw or (d.subcomponent is not None and d.subcomponent in raw)


class _AddSegment(_Step):
    __slots__ = ("_text", "_after", "_before")

    def __init__(self, name: str, spec, tables):
        place = f" after {spec.after}" if spec.after else f" before {spec.before}" if spec.before else ""
        super().__init__(name, f"add_segment {spec.segment[:3]}{place}")
        self._text = spec.segment
        self._after = spec.after
        self._before = spec.before

    def _apply(self, message: Message) -> Message:
        text = _in_delimiters(self._text, message.delimiters)
        if text is None:
            raise self.error("the message has no subcomponent separator for the '&' in the segment")
        texts = [segment.raw for segment in message.segments]
        anchor = self._after or self._before
        if anchor is None:
            texts.append(text)
        else:
            names = [segment.name for segment in message.segments]
            if anchor not in names:
                raise self.error(
                    f"the message has no {anchor} segment to add the segment {'after' if self._after else 'before'}"
                )
            index = names.index(anchor)
            texts.insert(index + 1 if self._after else index, text)
        return Message(message.delimiters, texts)


def _in_delimiters(text: str, d: Delimiters) -> str | None:
    """Segment text written with | ^ ~ \\ & in the message's own delimiters; None if one is missing."""
    if d == Delimiters.DEFAULT:
        return text
    if "&" in text and d.subcomponent is None:
        return None
    return text.translate(_notation_table(d))


@lru_cache(maxsize=64)
def _notation_table(d: Delimiters) -> dict[int, str]:
    # The message's own delimiter characters are plain text in the default notation: escape them first,
    # then map the default delimiters onto the message's (one translate, so nothing is replaced twice).
    table = {
        ord(char): escape(char, d)
        for char in (d.field, d.component, d.repetition, d.escape, d.subcomponent, d.truncation)
        if char
    }
    default = Delimiters.DEFAULT
    for char, target in zip(
        (default.field, default.component, default.repetition, default.escape, default.subcomponent),
        (d.field, d.component, d.repetition, d.escape, d.subcomponent),
    ):
        if target is not None:
            table[ord(char)] = target
    return table


class _RemoveSegment(_Step):
    __slots__ = ("_segment", "_occurrence")

    def __init__(self, name: str, spec, tables):
        which = f"[{spec.occurrence}]" if spec.occurrence else ""
        super().__init__(name, f"remove_segment {spec.segment}{which}")
        self._segment = spec.segment
        self._occurrence = spec.occurrence

    def _apply(self, message: Message) -> Message:
        kept, seen = [], 0
        for segment in message.segments:
            if segment.name == self._segment:
                seen += 1
                if self._occurrence is None or seen == self._occurrence:
                    continue
            kept.append(segment.raw)
        if len(kept) == len(message):
            return message
        return Message(message.delimiters, kept)


class _RenameSegment(_Step):
    __slots__ = ("_from", "_to")

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"rename_segment {spec.from_} to {spec.to}")
        self._from = spec.from_
        self._to = spec.to

    def _apply(self, message: Message) -> Message:
        segments = message.segments
        if not any(segment.name == self._from for segment in segments):
            return message
        size = len(self._from)
        return Message(
            message.delimiters,
            [
                self._to + segment.raw[size:] if segment.name == self._from else segment.raw
                for segment in segments
            ],
        )


class _Python(_Step):
    """The escape hatch: ``package.module:function``, called as ``function(message) -> Message``.

    Whatever the function raises becomes a TransformError (the message goes to ERROR, the channel goes on).
    """

    __slots__ = ("_function", "_target")

    def __init__(self, name: str, target: str, tables):
        super().__init__(name, f"python {target}")
        self._target = target
        try:
            self._function = _import_target(target)
        except ValueError as exc:
            raise ConfigError([f"{name}.python: {exc}"]) from None

    def apply(self, message: Message) -> Message:
        try:
            result = self._function(message)
        except TransformError as exc:  # the function's own reason, named after this transform
            raise self.error(str(exc)) from exc
        except Exception as exc:  # the hatch runs code we do not control; it must not stop the channel
            raise self.error(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, Message):
            raise self.error(f"returned {type(result).__name__}, not a Message")
        return result


def _import_target(target: str) -> Callable[[Message], Message]:
    """The callable ``package.module:function`` names; ValueError saying why when there is none."""
    module_name, _, attribute = target.partition(":")
    try:
        found = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing runs arbitrary code; any failure is a config problem
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not callable(found):
        raise ValueError(f"{target} is not callable (it is a {type(found).__name__})")
    return found


# ---------------------------------------------------------------------------------------------
# Rebuilding a message around a changed field


def _with_field(message: Message, segment: Segment, number: int, raw: str) -> Message:
    """A new message in which field ``number`` of ``segment`` is the (escaped) text ``raw``."""
    separator = message.delimiters.field
    fields = segment.fields
    fields.extend([""] * (number + 1 - len(fields)))
    fields[number] = raw
    # fields[1] of MSH/FHS/BHS is the field separator itself, not text between separators.
    text = fields[0] + separator + separator.join(fields[2:] if segment.is_header else fields[1:])
    return Message(
        message.delimiters, [text if other is segment else other.raw for other in message.segments]
    )


_BUILDERS: dict[str, Callable[[str, object, Mapping[str, LookupTable]], _Step]] = {
    "set": _build_set,
    "copy": _Copy,
    "delete": _Delete,
    "map": _Map,
    "replace": _Replace,
    "date": _Date,
    "case": _Case,
    "trim": _Trim,
    "add_segment": _AddSegment,
    "remove_segment": _RemoveSegment,
    "rename_segment": _RenameSegment,
    "split": _Split,
    "join": _Join,
    "set_version": _build_set_version,
    "python": _Python,
}
