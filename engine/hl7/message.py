"""HL7 v2 messages: delimiters, segment splitting, escape sequences, field paths, lazy Message.

A ``Message`` keeps the text of each segment and splits only what is asked for: a segment into
fields on first access, a field into repetitions, components and subcomponents on each ``get``.

Field paths (one grammar for filters, transforms, routing and the console)::

    SEG[occurrence]-field[repetition].component.subcomponent

Every index is 1-based; occurrence and repetition default to 1: ``PID-3``, ``PID-3[2].1``,
``OBX[3]-5``, ``MSH-9.2``, ``PID-5.1.1``. As in docs/hl7.md §2, MSH-1 is the field separator and
MSH-2 the encoding characters (the same for FHS and BHS); both are atomic values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from engine.errors import HL7Error

__all__ = [
    "HEADER_SEGMENTS",
    "Delimiters",
    "FieldPath",
    "Message",
    "Segment",
    "escape",
    "escape_breaks",
    "parse_path",
    "parsed_text",
    "split_segments",
    "unescape",
]

#: Segments whose field 1 is the field separator and field 2 the encoding characters.
HEADER_SEGMENTS = frozenset({"MSH", "FHS", "BHS"})


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators and escape character a message declares in MSH-1 and MSH-2."""

    field: str
    component: str
    repetition: str
    escape: str | None
    subcomponent: str | None
    truncation: str | None

    DEFAULT: ClassVar[Delimiters]

    @classmethod
    def from_msh(cls, field_sep: str, encoding_chars: str) -> Delimiters:
        """Return the delimiters MSH-1 and MSH-2 declare; HL7Error 102 when they are unusable."""
        return _delimiters(field_sep, encoding_chars, "MSH")

    @classmethod
    def from_header_segment(cls, segment: str) -> Delimiters:
        """Return the delimiters fields 1 and 2 of an MSH, FHS or BHS segment declare."""
        name = segment[:3]
        if len(segment) < 4:
            raise HL7Error(f"{name} segment has no field separator", code=102, location=(name, 1, 1))
        field_sep = segment[3]
        end = segment.find(field_sep, 4)
        encoding_chars = segment[4:end] if end >= 0 else segment[4:]
        return _delimiters(field_sep, encoding_chars, name)

    @property
    def encoding_chars(self) -> str:
        """The MSH-2 text these delimiters are written as."""
        return "".join(
            c
            for c in (self.component, self.repetition, self.escape, self.subcomponent, self.truncation)
            if c is not None
        )


Delimiters.DEFAULT = Delimiters("|", "^", "~", "\\", "&", None)


def _usable_delimiter(char: str) -> bool:
    return char.isprintable() and not char.isspace() and not char.isalnum()


def _delimiter_problem(field_sep: str, encoding_chars: str) -> str | None:
    if len(field_sep) != 1 or not _usable_delimiter(field_sep):
        return f"field separator {field_sep!r} must be one printable, non-alphanumeric character"
    if not 3 <= len(encoding_chars) <= 5:
        return (
            f"encoding characters {encoding_chars!r} must be 3 to 5 characters "
            "(component, repetition, escape, [subcomponent], [truncation])"
        )
    for char in encoding_chars:
        if not _usable_delimiter(char):
            return f"encoding character {char!r} must be printable and non-alphanumeric"
    if len(set(encoding_chars + field_sep)) != len(encoding_chars) + 1:
        return f"delimiters {field_sep + encoding_chars!r} must all differ"
    return None


@lru_cache(maxsize=64)
def _delimiters(field_sep: str, encoding_chars: str, segment: str) -> Delimiters:
    if encoding_chars[2:4] == "\\\\" and len(encoding_chars) == 5:
        # MSH-2 with its escape character doubled, as copied from a source-code string literal:
        # a known sender bug (two corpus sources), read as the single escape character it meant.
        encoding_chars = encoding_chars[:3] + encoding_chars[4:]
    problem = _delimiter_problem(field_sep, encoding_chars)
    if problem is not None:
        raise HL7Error(f"invalid {segment}-1/{segment}-2: {problem}", code=102, location=(segment, 1, 2))
    extra = encoding_chars[3:]
    return Delimiters(
        field=field_sep,
        component=encoding_chars[0],
        repetition=encoding_chars[1],
        escape=encoding_chars[2],
        subcomponent=extra[0] if extra else None,
        truncation=extra[1] if len(extra) > 1 else None,
    )


def split_segments(text: str) -> list[str]:
    """Split text into segments on CR, LF or CRLF, dropping empty lines; nothing else is stripped."""
    return [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]


# ---------------------------------------------------------------------------------------------
# Escape sequences (docs/hl7.md §3)

_HEX_RUN = re.compile(r"(?:[0-9A-Fa-f]{2})+")


@lru_cache(maxsize=64)
def _unescape_table(delims: Delimiters) -> dict[str, str]:
    table = {"F": delims.field, "S": delims.component, "R": delims.repetition, "E": delims.escape}
    if delims.subcomponent is not None:
        table["T"] = delims.subcomponent
    if delims.truncation is not None:
        # hl7apy writes the truncation character as \L\; a secondary source names it \P\.
        table["L"] = table["P"] = delims.truncation
    return table


# What ends a segment (CR, LF) or an MLLP block (VT starts one, FS ends one), as hex escapes.
_BREAKS = {"\r": "X0D", "\n": "X0A", "\x0b": "X0B", "\x1c": "X1C"}


@lru_cache(maxsize=64)
def _escape_table(delims: Delimiters) -> dict[int, str]:
    esc = delims.escape
    plain = {
        delims.escape: "E",
        delims.field: "F",
        delims.component: "S",
        delims.repetition: "R",
        delims.subcomponent: "T",
        delims.truncation: "L",
        **_BREAKS,
    }
    return {ord(char): f"{esc}{code}{esc}" for char, code in plain.items() if char is not None}


@lru_cache(maxsize=64)
def _breaks_table(delims: Delimiters) -> dict[int, str]:
    esc = delims.escape
    return {ord(char): f"{esc}{code}{esc}" if esc else "" for char, code in _BREAKS.items()}


def _decode_hex(digits: str) -> str:
    data = bytes.fromhex(digits)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unescape(value: str, delims: Delimiters) -> str:
    """Replace delimiter escapes and ``\\Xhh..\\`` in a leaf value; keep every other sequence.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` become the delimiters (``\\T\\`` only when the message has a
    subcomponent separator, ``\\L\\``/``\\P\\`` only when it has a truncation character).
    ``\\Xhh..\\`` becomes the characters of those bytes read as UTF-8, or as Latin-1 when they
    are not valid UTF-8. Highlighting (``\\H\\ \\N\\``), formatting (``\\.br\\`` ...), charset
    switches (``\\Cxxyy\\ \\Mxxyy\\``), local (``\\Zxx\\``), empty, malformed and unterminated
    sequences are kept verbatim, so nothing is lost.
    """
    esc = delims.escape
    if not esc or esc not in value:
        return value
    table = _unescape_table(delims)
    out = []
    start = 0
    while True:
        opening = value.find(esc, start)
        if opening < 0:
            out.append(value[start:])
            break
        closing = value.find(esc, opening + 1)
        if closing < 0:
            out.append(value[start:])
            break
        out.append(value[start:opening])
        body = value[opening + 1 : closing]
        replacement = table.get(body)
        if replacement is None and body[:1] == "X" and _HEX_RUN.fullmatch(body, 1):
            replacement = _decode_hex(body[1:])
        out.append(value[opening : closing + 1] if replacement is None else replacement)
        start = closing + 1
    return "".join(out)


def escape(value: str, delims: Delimiters) -> str:
    """Escape delimiters, the escape character and CR/LF so that ``value`` is one leaf value.

    CR, LF, VT and FS become ``\\X0D\\``, ``\\X0A\\``, ``\\X0B\\`` and ``\\X1C\\`` (docs/hl7.md §3
    accepts the hex forms), so ``unescape(escape(v, d), d) == v`` for every string, and no value can
    end a segment or an MLLP block. Raises ValueError when the delimiters have no escape character and
    ``value`` needs one.
    """
    if value.isalnum():  # no delimiter, escape character or break is alphanumeric (e.g. a control id)
        return value
    if delims.escape is None:
        specials = {delims.field, delims.component, delims.repetition, delims.subcomponent, *_BREAKS}
        if any(char in value for char in specials if char):
            raise ValueError("cannot escape a value: the delimiters have no escape character")
        return value
    return value.translate(_escape_table(delims))


def escape_breaks(value: str, delims: Delimiters) -> str:
    """A raw value (already written in ``delims``) made safe to echo: CR, LF, VT and FS hex-escaped.

    Delimiters in it stay as they are (they are its structure); what would end the segment or the
    MLLP block it is echoed in becomes ``\\X0D\\`` etc., or is dropped when there is no escape character.
    """
    if value.isprintable():  # the common case, at the cost of one scan
        return value
    return value.translate(_breaks_table(delims))


# ---------------------------------------------------------------------------------------------
# Field paths

_PATH = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?")


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed field path; None where the path does not say (occurrence/repetition mean 1)."""

    segment: str
    occurrence: int | None
    field: int
    repetition: int | None
    component: int | None
    subcomponent: int | None

    def __str__(self) -> str:
        text = self.segment
        if self.occurrence is not None:
            text += f"[{self.occurrence}]"
        text += f"-{self.field}"
        if self.repetition is not None:
            text += f"[{self.repetition}]"
        if self.component is not None:
            text += f".{self.component}"
        if self.subcomponent is not None:
            text += f".{self.subcomponent}"
        return text


@lru_cache(maxsize=1024)
def parse_path(path: str) -> FieldPath:
    """Parse ``SEG[occ]-field[rep].component.subcomponent``; ValueError for bad syntax."""
    match = _PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise ValueError(
            f"invalid field path {path!r}: expected SEG[occurrence]-field[repetition]"
            ".component.subcomponent, e.g. 'PID-3', 'PID-3[2].1', 'OBX[3]-5'"
        )
    segment, *numbers = match.groups()
    occurrence, field, repetition, component, subcomponent = (
        None if number is None else int(number) for number in numbers
    )
    if 0 in (occurrence, field, repetition, component, subcomponent):
        raise ValueError(f"invalid field path {path!r}: indices are 1-based, 0 is not allowed")
    return FieldPath(segment, occurrence, field, repetition, component, subcomponent)


# ---------------------------------------------------------------------------------------------
# Segments and messages


def _split_fields(raw: str, separator: str) -> list[str]:
    if raw[:3] in HEADER_SEGMENTS and len(raw) > 3:
        return [raw[:3], raw[3], *raw[4:].split(separator)]
    return raw.split(separator)


def _join_fields(fields: list[str], separator: str) -> str:
    if fields[0] in HEADER_SEGMENTS and len(fields) > 1:
        return fields[0] + fields[1] + separator.join(fields[2:])
    return separator.join(fields)


def _pick(parts: list[str], index: int) -> str:
    return parts[index - 1] if index <= len(parts) else ""


class Segment:
    """One segment: its text, split into fields on first access."""

    __slots__ = ("_raw", "_name", "_separator", "_fields")

    def __init__(self, raw: str, delimiters: Delimiters):
        self._raw = raw
        self._separator = delimiters.field
        if raw[:3] in HEADER_SEGMENTS:
            self._name = raw[:3]
        else:
            end = raw.find(self._separator)
            self._name = raw if end < 0 else raw[:end]
        self._fields: list[str] | None = None

    def __repr__(self) -> str:
        return f"<Segment {self._name}>"

    @property
    def name(self) -> str:
        """The segment ID (``PID``, ``ZPR``) as written."""
        return self._name

    @property
    def raw(self) -> str:
        """The segment text, including any change made through ``Message.set``."""
        return self._raw

    @property
    def is_header(self) -> bool:
        """True for MSH, FHS and BHS, whose fields 1 and 2 are the delimiters themselves."""
        return self._name in HEADER_SEGMENTS

    @property
    def fields(self) -> list[str]:
        """A copy of the raw, escaped fields: index i is field i, index 0 the segment ID."""
        return list(self._split())

    def field(self, n: int) -> str:
        """Return raw field ``n`` ('' when absent)."""
        fields = self._split()
        return fields[n] if 0 <= n < len(fields) else ""

    def _split(self) -> list[str]:
        if self._fields is None:
            self._fields = _split_fields(self._raw, self._separator)
        return self._fields

    def _replace_field(self, n: int, value: str) -> None:
        fields = self._split()
        if len(fields) == 1 and self.is_header:
            fields.append(self._separator)
        fields.extend([""] * (n + 1 - len(fields)))
        fields[n] = value
        self._raw = _join_fields(fields, self._separator)


class Message:
    """A lazily split HL7 v2 message; build one with ``Message.parse``."""

    __slots__ = ("_delimiters", "_segments")

    def __init__(self, delimiters: Delimiters, segments: list[str]):
        self._delimiters = delimiters
        self._segments = [Segment(raw, delimiters) for raw in segments]

    @classmethod
    def parse(cls, text: str) -> Message:
        """Read decoded message text; HL7Error 100 without a leading MSH, 102 for bad delimiters.

        Blank lines are dropped; nothing else (not even leading whitespace) is skipped, so that
        ``to_text`` gives back ``'\\r'.join(split_segments(text))``.
        """
        return cls(*_read_segments(text))

    def __len__(self) -> int:
        return len(self._segments)

    def __repr__(self) -> str:
        return f"<Message {len(self._segments)} segments>"

    @property
    def delimiters(self) -> Delimiters:
        """The delimiters MSH-1 and MSH-2 declare."""
        return self._delimiters

    @property
    def segments(self) -> list[Segment]:
        """The segments in order (a new list; the segments themselves are shared)."""
        return list(self._segments)

    def segments_named(self, name: str) -> list[Segment]:
        """Return every segment with this ID, in order."""
        return [segment for segment in self._segments if segment.name == name]

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """Return the ``occurrence``-th (1-based) segment with this ID, or None."""
        for segment in self._segments:
            if segment.name == name:
                occurrence -= 1
                if occurrence == 0:
                    return segment
        return None

    def get(self, path: str) -> str:
        """Return the value at a field path; '' when absent. ValueError for a bad path.

        A path that reaches a leaf (a part with no delimiter left inside) returns the unescaped
        value. A path that stops above the leaf level returns that part's raw, escaped text with
        its delimiters intact: with ``PID-5`` = ``DOE^JOHN``, ``get("PID-5")`` is ``"DOE^JOHN"``
        and ``get("PID-5.1")`` is ``"DOE"``. A field path means its first repetition:
        ``PID-3`` is ``PID-3[1]``; ``Segment.field(3)`` gives the whole field.
        """
        where = parse_path(path)
        segment = self.segment(where.segment, where.occurrence or 1)
        if segment is None:
            return ""
        value = segment.field(where.field)
        if segment.is_header and where.field <= 2:
            below = (where.repetition, where.component, where.subcomponent)
            return value if all(index in (None, 1) for index in below) else ""
        d = self._delimiters
        value = _pick(value.split(d.repetition), where.repetition or 1)
        if where.component is None:
            if d.component in value or (d.subcomponent is not None and d.subcomponent in value):
                return value
            return unescape(value, d)
        value = _pick(value.split(d.component), where.component)
        if d.subcomponent is None:
            return unescape(value, d) if where.subcomponent in (None, 1) else ""
        if where.subcomponent is None:
            return value if d.subcomponent in value else unescape(value, d)
        return unescape(_pick(value.split(d.subcomponent), where.subcomponent), d)

    def set(self, path: str, value: str) -> None:
        """Escape ``value`` and store it at a field path, adding segments and parts as needed.

        The path addresses the same part as in ``get``: ``set("PID-3", v)`` replaces the first
        repetition and keeps the others. A missing segment occurrence is appended at the end.
        Raises ValueError for a bad path, for MSH/FHS/BHS fields 1-2 (the delimiters), for
        creating an MSH/FHS/BHS, and for a subcomponent when the message has no separator for it.
        """
        where = parse_path(path)
        d = self._delimiters
        escaped = escape(value, d)
        if where.segment in HEADER_SEGMENTS and where.field <= 2:
            raise ValueError(
                f"{where.segment}-1 and {where.segment}-2 are the delimiters; they cannot be set"
            )
        if where.subcomponent not in (None, 1) and d.subcomponent is None:
            raise ValueError(f"cannot set {path!r}: the message has no subcomponent separator")
        segment = self.segment(where.segment, where.occurrence or 1)
        if segment is None:
            if where.segment in HEADER_SEGMENTS:
                raise ValueError(f"cannot create a {where.segment} segment with set({path!r})")
            missing = (where.occurrence or 1) - len(self.segments_named(where.segment))
            for _ in range(missing):
                segment = Segment(where.segment, d)
                self._segments.append(segment)

        repetitions = segment.field(where.field).split(d.repetition)
        repetition_index = (where.repetition or 1) - 1
        repetitions.extend([""] * (repetition_index + 1 - len(repetitions)))
        if where.component is None:
            repetitions[repetition_index] = escaped
        else:
            components = repetitions[repetition_index].split(d.component)
            components.extend([""] * (where.component - len(components)))
            if where.subcomponent is None or d.subcomponent is None:
                components[where.component - 1] = escaped
            else:
                subcomponents = components[where.component - 1].split(d.subcomponent)
                subcomponents.extend([""] * (where.subcomponent - len(subcomponents)))
                subcomponents[where.subcomponent - 1] = escaped
                components[where.component - 1] = d.subcomponent.join(subcomponents)
            repetitions[repetition_index] = d.component.join(components)
        segment._replace_field(where.field, d.repetition.join(repetitions))

    def to_text(self, segment_separator: str = "\r") -> str:
        """Return the message text; the parsed input (CR-separated) when nothing was set."""
        return segment_separator.join(segment.raw for segment in self._segments)


def parsed_text(text: str) -> str:
    """``Message.parse(text).to_text()`` without building the message; HL7Error as ``parse``.

    For what only passes a message on: its segments, CR-separated, once its MSH is known to be readable.
    """
    if text[:3] == "MSH" and "\n" not in text and "\r\r" not in text:
        # Already one CR between segments (as senders write them): at most a trailing CR to drop.
        body = text[:-1] if text[-1] == "\r" else text
        end = body.find("\r")
        first = body if end < 0 else body[:end]
        if len(first) >= 4:
            Delimiters.from_header_segment(first)
            return body
    return "\r".join(_read_segments(text)[1])


def _read_segments(text: str) -> tuple[Delimiters, list[str]]:
    lines = split_segments(text)
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 4:
        raise HL7Error("no MSH segment at the start of the message", code=100, location=("MSH",))
    return Delimiters.from_header_segment(lines[0]), lines
