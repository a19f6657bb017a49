"""engine/record/extract.py: SegmentReader reads what Message.get reads on every corpus and sample path."""

from __future__ import annotations

import re

from engine.errors import HL7Error
from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.record.extract import SegmentReader
from tests.fakes.corpus import corpus_entries
from tests.fakes.record import SAMPLES

_INDEXED = re.compile(r"(\d+)\[(\d+)\]\.(\d+)(?:\.(\d+))?")


def _paths(message: Message, segment) -> list[str]:
    """Every field path into ``segment``, with and without repetition, and one index past each end."""
    d = message.delimiters
    paths = []
    for n in range(1, len(segment.fields) + 1):
        repetitions = segment.field(n).split(d.repetition)
        paths.append(f"{n}")
        for r in range(1, len(repetitions) + 1):
            components = repetitions[r - 1].split(d.component)
            paths.append(f"{n}[{r}]")
            for c, component in enumerate(components, start=1):
                subcomponents = component.split(d.subcomponent) if d.subcomponent else [component]
                for where in (f"{n}[{r}].{c}", *([f"{n}.{c}"] if r == 1 else [])):
                    paths.append(where)
                    paths.extend(f"{where}.{s}" for s in range(1, len(subcomponents) + 2))
            paths.append(f"{n}[{r}].{len(components) + 1}")
        paths.extend(
            (
                f"{n}[{len(repetitions) + 1}]",
                f"{n}[{len(repetitions) + 1}].1",
                f"{n}[{len(repetitions) + 1}].1.1",
            )
        )
    return paths


def _messages() -> list[Message]:
    texts = [decode(path.read_bytes()).text for path in sorted(SAMPLES.glob("*.hl7"))]
    texts += [decode(entry.path.read_bytes()).text for entry in corpus_entries()]
    messages = []
    for text in texts:
        try:
            messages.append(Message.parse(text))
        except HL7Error:
            continue  # no message to read
    return messages


def test_segment_reader_reads_what_message_get_reads():
    """Every path of every corpus and sample segment reads as Message.get (escapes, nulls, past the end)."""
    compared = 0
    seen = set()
    for message in _messages():
        for segment in message.segments:
            name = segment.name
            if (message.delimiters, segment.raw) in seen or not (
                len(name) == 3 and name.isalnum() and name.isupper() and name[0].isalpha()
            ):
                continue  # read already, or not addressable by a field path
            seen.add((message.delimiters, segment.raw))
            reader, alone = SegmentReader(segment, message), Message(message.delimiters, [segment.raw])
            for path in _paths(message, segment):
                assert reader.get(path) == alone.get(f"{name}-{path}"), (name, path)
                if (where := _INDEXED.fullmatch(path)) is not None:  # as coded(), person() and values.py read
                    assert reader.part_at(*(int(index) for index in where.groups() if index)) == reader.part(
                        path
                    ), (name, path)
                compared += 1
    assert compared > 100_000
