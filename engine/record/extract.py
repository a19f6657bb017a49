"""What an HL7 message says for the record: segments grouped by patient and read into column values.

Every field is read through ``Message.get`` (the one field-path implementation): each segment is
wrapped in a one-segment ``Message`` so that paths like ``3[2].4.1`` address it directly.

Column values follow HL7's empty-vs-null rule (docs/hl7.md §2): a field that is absent gives
``KEEP`` (the stored value stays), a field that is ``""`` gives None (the stored value is
cleared), and inside a field that is present an empty component is None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.hl7.dtm import parse_timestamp
from engine.hl7.message import Message, Segment, parse_path, unescape

__all__ = [
    "KEEP",
    "MessageFacts",
    "OrderGroup",
    "PatientGroup",
    "Remembered",
    "SegmentReader",
    "read_message",
]


class _Keep:
    """The marker of a value the message does not send: the stored value stays."""

    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"

    def __bool__(self) -> bool:
        return False


KEEP = _Keep()

_NULL = '""'
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def parse_decimal(text: str) -> Decimal | None:
    """A decimal number, or None when the text is not one."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


_RELATIVE_PATHS: dict[str, tuple[tuple[int, int], int | None, int | None]] = {}
_CODED_NAMES: dict[str, tuple[str, str, str]] = {}  # prefix -> the names of coded()'s three columns


def _relative_path(path: str) -> tuple[tuple[int, int], int | None, int | None]:
    """``field[repetition].component.subcomponent`` as ((field, repetition), component, subcomponent).

    Read by ``parse_path``, once per path.
    """
    found = _RELATIVE_PATHS.get(path)
    if found is None:
        where = parse_path(f"SEG-{path}")
        found = _RELATIVE_PATHS[path] = (
            (where.field, where.repetition or 1),
            where.component,
            where.subcomponent,
        )
    return found


class Remembered:
    """What was read from segments, by what it depends on (``SegmentReader.source``, ...): read once.

    At most ``limit`` values are kept; then all are forgotten and kept anew. A patient's PID recurs
    unchanged from message to message: reading it again would give the same.
    """

    __slots__ = ("limit", "_values")

    def __init__(self, limit: int):
        self.limit = limit
        self._values: dict[Any, Any] = {}

    def get(self, key: Any, read: Callable[[], Any]) -> Any:
        """The value kept under ``key``, else what ``read()`` gives (kept)."""
        found = self._values.get(key)
        if found is None:
            if len(self._values) >= self.limit:
                self._values.clear()
            found = self._values[key] = read()
        return found


class SegmentReader:
    """One segment, read with field paths relative to it: ``reader.get("3[2].4.1")``.

    Values are those of ``Message.get`` (a leaf unescaped, a part above the leaf with its
    delimiters; tests/record/test_extract.py compares the two on every path of the corpus), but
    each repetition is split into components once per reader instead of on every read: the
    record reads a hundred values of a message, and the path grammar, the segment lookup and the
    splitting of ``Message.get`` were a large share of the time spent applying it (measured:
    see docs/performance.md).
    """

    __slots__ = (
        "name",
        "_delimiters",
        "_repetition",
        "_component",
        "_subcomponent",
        "_escape",
        "_is_header",
        "_components",
        "_fields",
        "source",
    )

    def __init__(self, segment: Segment, message: Message):
        self.name = segment.name
        self._delimiters = d = message.delimiters
        # Each read needs them: kept here rather than looked up on the delimiters every time.
        self._repetition, self._component, self._subcomponent = d.repetition, d.component, d.subcomponent
        self._escape = d.escape or ""  # "": every value goes through unescape, which knows there is none
        self._is_header = segment.is_header  # MSH, FHS, BHS: fields 1 and 2 are the delimiters themselves
        # (field, repetition) -> (the repetition's text, its components)
        self._components: dict[tuple[int, int], tuple[str, list[str]]] = {}
        # The segment's raw fields: the record reads nearly every segment it is given.
        self._fields = segment.fields
        # What every value read depends on: the same source, the same values.
        self.source = (segment.raw, d)

    def __repr__(self) -> str:
        return f"<SegmentReader {self.name}>"

    def get(self, path: str) -> str:
        """The value at ``field[repetition].component.subcomponent`` of this segment ('' when absent)."""
        # unpacked here, not with *: a plain call is the interpreter's fast one
        key, component, subcomponent = _RELATIVE_PATHS.get(path) or _relative_path(path)
        return self._read(key, component, subcomponent)

    def _read(self, key: tuple[int, int], component: int | None, subcomponent: int | None) -> str:
        """``get``, the path already read: key is (field, repetition)."""
        split = self._components.get(key)
        if split is None:
            n, fields = key[0], self._fields
            raw = fields[n] if 0 <= n < len(fields) else ""  # as _field, inline: a hundred times a message
            if n <= 2 and self._is_header:
                # The delimiters themselves, as Message.get reads them: whole, never split nor unescaped.
                return raw if key[1] == 1 and component in (None, 1) and subcomponent in (None, 1) else ""
            if self._repetition in raw:
                repetitions = raw.split(self._repetition)
                raw = repetitions[key[1] - 1] if key[1] <= len(repetitions) else ""
            elif key[1] != 1:
                raw = ""
            split = self._components[key] = (raw, raw.split(self._component))
        below = self._subcomponent
        if component is None:
            value = split[0]
            if self._component in value or (below is not None and below in value):
                return value  # above the leaf: as written
        else:
            components = split[1]
            value = components[component - 1] if component <= len(components) else ""
            if below is None:
                if subcomponent not in (None, 1):
                    return ""
            elif subcomponent is None:
                if below in value:
                    return value  # above the leaf: as written
            else:
                subcomponents = value.split(below)
                value = subcomponents[subcomponent - 1] if subcomponent <= len(subcomponents) else ""
        return unescape(value, self._delimiters) if self._escape in value else value

    def _field(self, n: int) -> str:
        """Raw field ``n`` ('' when absent), as ``Segment.field``."""
        fields = self._fields
        return fields[n] if 0 <= n < len(fields) else ""

    def repetitions(self, n: int) -> int:
        """How many repetitions field ``n`` holds (0 when it is empty)."""
        raw = self._field(n)
        return len(raw.split(self._repetition)) if raw else 0

    def sent(self, n: int) -> bool | None:
        """True when field ``n`` holds a value, None when it is the HL7 null ``""``, False when absent."""
        raw = self._field(n)
        if raw == _NULL:
            return None
        return bool(raw)

    def part(self, path: str) -> str | None:
        """The value at ``path`` with surrounding blanks dropped, None when empty."""
        key, component, subcomponent = _RELATIVE_PATHS.get(path) or _relative_path(path)
        return self._read(key, component, subcomponent).strip() or None

    def part_at(self, n: int, repetition: int, component: int, subcomponent: int | None = None) -> str | None:
        """``part`` of ``n[repetition].component[.subcomponent]``, without writing the path to read it."""
        return self._read((n, repetition), component, subcomponent).strip() or None

    def columns(self, n: int, paths: dict[str, str | tuple[str, Callable[[str], Any]]]) -> dict[str, Any]:
        """Column values of field ``n``: each KEEP when it is absent, None when null, else from its path.

        A path may come with a converter of its non-empty text; text the converter cannot read
        (it returns None) gives KEEP, so an unreadable value never clears a stored one.
        """
        return self.columns_of((n, paths))

    def columns_of(
        self, *fields: tuple[int, dict[str, str | tuple[str, Callable[[str], Any]]]]
    ) -> dict[str, Any]:
        """``columns`` of each (field, paths), in one dict: a row's columns in one call, not one a field."""
        values: dict[str, Any] = {}
        raws = self._fields
        for n, paths in fields:
            raw = raws[n] if 0 <= n < len(raws) else ""  # as sent() reads it, without a call per field
            if not raw:
                values.update(dict.fromkeys(paths, KEEP))
                continue
            if raw == _NULL:
                values.update(dict.fromkeys(paths, None))
                continue
            for column, spec in paths.items():
                path, convert = (spec, None) if spec.__class__ is str else spec
                key, component, subcomponent = _RELATIVE_PATHS.get(path) or _relative_path(path)
                text = self._read(key, component, subcomponent).strip()
                if convert is None:
                    values[column] = text or None
                    continue
                if text:
                    converted = convert(text)
                    values[column] = KEEP if converted is None else converted
                else:
                    values[column] = None
        return values

    def coded(self, n: int, prefix: str = "", repetition: int = 1) -> dict[str, Any]:
        """A CE/CWE field as ``{prefix}code``, ``{prefix}text``, ``{prefix}system``.

        The alternate triplet when the first is empty. Like ``columns``: KEEP when the field is
        absent, None when it is the HL7 null.
        """
        names = _CODED_NAMES.get(prefix) or _CODED_NAMES.setdefault(
            prefix, (f"{prefix}code", f"{prefix}text", f"{prefix}system")
        )
        state = self.sent(n)
        if not state:
            return dict.fromkeys(names, KEEP if state is False else None)
        code, text = self.part_at(n, repetition, 1), self.part_at(n, repetition, 2)
        if code is None and text is None:
            return dict(
                zip(
                    names,
                    (
                        self.part_at(n, repetition, 4),
                        self.part_at(n, repetition, 5),
                        self.part_at(n, repetition, 6),
                    ),
                )
            )
        return dict(zip(names, (code, text, self.part_at(n, repetition, 3))))

    def person(self, n: int, repetition: int = 1) -> tuple[str | None, str | None]:
        """The XCN in field ``n`` (its ``repetition``): (ID, display name 'Given Family')."""
        parts = (
            self.part_at(n, repetition, 6),
            self.part_at(n, repetition, 3),
            self.part_at(n, repetition, 4),
            self.part_at(n, repetition, 2, 1),
        )
        return self.part_at(n, repetition, 1), " ".join(part for part in parts if part) or None


@dataclass
class ObservationGroup:
    """One OBX and the NTE segments after it."""

    obx: SegmentReader
    notes: list[str] = field(default_factory=list)


@dataclass
class OrderGroup:
    """ORC and/or OBR, the NTE after OBR, and the OBX groups that follow."""

    orc: SegmentReader | None = None
    obr: SegmentReader | None = None
    notes: list[str] = field(default_factory=list)
    observations: list[ObservationGroup] = field(default_factory=list)


@dataclass
class PatientGroup:
    """A PID and every segment that belongs to that patient until the next PID."""

    pid: SegmentReader
    mrg: SegmentReader | None = None
    pv1: SegmentReader | None = None
    pv2: SegmentReader | None = None
    contacts: list[SegmentReader] = field(default_factory=list)
    allergies: list[SegmentReader] = field(default_factory=list)
    diagnoses: list[SegmentReader] = field(default_factory=list)
    procedures: list[SegmentReader] = field(default_factory=list)
    insurances: list[tuple[SegmentReader, SegmentReader | None]] = field(default_factory=list)
    orders: list[OrderGroup] = field(default_factory=list)
    transactions: list[SegmentReader] = field(default_factory=list)


@dataclass
class MessageFacts:
    """A message cut into what the record needs: header values, appointment segments, patient groups."""

    code: str
    trigger: str
    message_time: datetime
    source_system: str
    default_authority: str
    sch: SegmentReader | None = None
    tq1: SegmentReader | None = None
    resources: list[SegmentReader] = field(default_factory=list)
    patients: list[PatientGroup] = field(default_factory=list)

    @property
    def event(self) -> str:
        """``CODE^TRIGGER`` (``ORU^`` when MSH-9 has no trigger)."""
        return f"{self.code}^{self.trigger}"


_RESOURCE_SEGMENTS = frozenset({"AIS", "AIG", "AIL", "AIP"})
# The segments _group reads (after the PID that opens a group): no reader is made for the others.
_GROUPED = frozenset(
    {
        *("SCH", "TQ1", *_RESOURCE_SEGMENTS),
        *("MRG", "PV1", "PV2", "NK1", "AL1", "DG1", "PR1", "IN1", "IN2", "FT1"),
        *("ORC", "OBR", "OBX", "NTE"),
    }
)


def read_message(message: Message, *, received_at: datetime, local: tzinfo) -> MessageFacts:
    """Group the message's segments by patient and read its header; never raises for content."""
    msh = SegmentReader(message.segments[0], message)
    code = msh.get("9.1").strip().upper()
    trigger = msh.get("9.2").strip().upper()
    evn = message.segment("EVN")
    recorded = None
    if evn is not None:
        event = SegmentReader(evn, message)
        if not trigger:
            trigger = event.get("1").strip().upper()
        recorded = parse_timestamp(event.get("2.1"), local)
    message_time = recorded or parse_timestamp(msh.get("7.1"), local) or received_at
    application = msh.part("3.1") or msh.part("3.2") or ""
    facility = msh.part("4.1") or msh.part("4.2")
    facts = MessageFacts(
        code=code,
        trigger=trigger,
        message_time=message_time,
        source_system=application,
        default_authority=f"{application}@{facility}" if facility else application,
    )
    _group(message, facts)
    return facts


def _group(message: Message, facts: MessageFacts) -> None:
    patient: PatientGroup | None = None
    order: OrderGroup | None = None
    observation: ObservationGroup | None = None
    for segment in message.segments[1:]:
        name = segment.name
        if name == "PID":
            patient = PatientGroup(SegmentReader(segment, message))
            facts.patients.append(patient)
            order = observation = None
            continue
        if name not in _GROUPED:
            continue
        reader = SegmentReader(segment, message)
        if name == "SCH":
            facts.sch = reader
        elif name == "TQ1" and facts.sch is not None and facts.tq1 is None:
            facts.tq1 = reader
        elif name in _RESOURCE_SEGMENTS:
            facts.resources.append(reader)
        elif patient is None:
            continue
        elif name == "MRG":
            patient.mrg = reader
        elif name == "PV1":
            patient.pv1 = reader
        elif name == "PV2":
            patient.pv2 = reader
        elif name == "NK1":
            patient.contacts.append(reader)
        elif name == "AL1":
            patient.allergies.append(reader)
        elif name == "DG1":
            patient.diagnoses.append(reader)
        elif name == "PR1":
            patient.procedures.append(reader)
        elif name == "IN1":
            patient.insurances.append((reader, None))
        elif name == "IN2" and patient.insurances and patient.insurances[-1][1] is None:
            patient.insurances[-1] = (patient.insurances[-1][0], reader)
        elif name == "FT1":
            patient.transactions.append(reader)
        elif name == "ORC":
            order = OrderGroup(orc=reader)
            patient.orders.append(order)
            observation = None
        elif name == "OBR":
            if order is None or order.obr is not None:
                order = OrderGroup()
                patient.orders.append(order)
            order.obr = reader
            observation = None
        elif name == "OBX" and order is not None:
            observation = ObservationGroup(reader)
            order.observations.append(observation)
        elif name == "NTE":
            note = reader.get("3")
            if observation is not None:
                observation.notes.append(note)
            elif order is not None:
                order.notes.append(note)
