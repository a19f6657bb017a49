"""Structure transforms: delete, split and join change a whole field; add, remove and rename segments.

``Message`` has no method for these changes, so each rebuilds the message from its segment texts
(``with_field`` for a field); a field's repetitions are split and joined as escaped text.
"""

from __future__ import annotations

from functools import lru_cache

from engine.hl7.message import Delimiters, Message, Segment, escape, parse_path, unescape
from engine.transforms.step import Step, with_field, write

__all__ = ["AddSegment", "Delete", "Join", "RemoveSegment", "RenameSegment", "Split"]


class Delete(Step):
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
            write(message, self._path, "")
            return message
        raw = segment.field(where.field)
        separator = message.delimiters.repetition
        if where.repetition is None:
            if separator not in raw:
                write(message, self._path, "")
                return message
            return with_field(message, segment, where.field, "")
        repetitions = raw.split(separator)
        if where.repetition > len(repetitions):
            return message
        del repetitions[where.repetition - 1]
        return with_field(message, segment, where.field, separator.join(repetitions))


class _AtSeparator(Step):
    """split and join: the repetitions of one field, cut or joined at the spec's separator."""

    __slots__ = ("_where", "_separator")
    kind = ""

    def __init__(self, name: str, spec, tables):
        super().__init__(name, f"{self.kind} {spec.field}")
        self._where = parse_path(spec.field)
        self._separator = spec.separator

    def _apply(self, message: Message) -> Message:
        segment = message.segment(self._where.segment, self._where.occurrence or 1)
        return message if segment is None else self._change(message, segment)

    def _change(self, message: Message, segment: Segment) -> Message:
        raise NotImplementedError


class Split(_AtSeparator):
    """Every repetition whose text contains the separator becomes one repetition per piece; empty
    pieces are dropped. A repetition with components cannot be split.
    """

    __slots__ = ()
    kind = "split"

    def _change(self, message: Message, segment: Segment) -> Message:
        where = self._where
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
        return with_field(message, segment, where.field, d.repetition.join(repetitions))


class Join(_AtSeparator):
    """All non-empty repetitions become one value, joined by the separator."""

    __slots__ = ()
    kind = "join"

    def _change(self, message: Message, segment: Segment) -> Message:
        where = self._where
        d = message.delimiters
        raw = segment.field(where.field)
        if d.repetition not in raw:
            return message
        repetitions = raw.split(d.repetition)
        if any(_has_components(repetition, d) for repetition in repetitions):
            raise self.error(f"{where} has components; join works on fields of single values")
        # Joining the escaped texts with the escaped separator keeps every escape sequence as it was.
        joined = escape(self._separator, d).join(repetition for repetition in repetitions if repetition)
        return with_field(message, segment, where.field, joined)


def _has_components(raw: str, d: Delimiters) -> bool:
    return d.component in raw or (d.subcomponent is not None and d.subcomponent in raw)


class AddSegment(Step):
    """``add_segment``: a segment written in the default notation, added after, before or at the end."""

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
                where = "after" if self._after else "before"
                raise self.error(f"the message has no {anchor} segment to add the segment {where}")
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


class RemoveSegment(Step):
    """``remove_segment``: every segment of a name removed, or one occurrence of it."""

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


class RenameSegment(Step):
    """``rename_segment``: every segment of a name given another name."""

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
