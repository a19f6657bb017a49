"""Message structures of hl7apy, read once per version: which segments a message holds, in which groups.

``structure_of("2.5", "ORU_R01")`` is the structure's tree (or None when hl7apy does not define
it); ``place(tree, names)`` matches a message's segment IDs against it, greedily and in order,
and says which group each segment belongs to, which required segments or groups are missing,
and where the segments stop fitting. Validation (``engine.hl7.validate``) and v2.xml
(``engine.hl7.xml``) both read messages through it, so they agree on groups.

Z segments fit anywhere: they stay in the group of the segment before them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from hl7apy import load_reference
from hl7apy.exceptions import ChildNotFound

from engine.hl7.names import library_version

__all__ = [
    "Group",
    "Placement",
    "SegmentSlot",
    "datatype_reference",
    "leaf_table",
    "place",
    "segment_reference",
    "structure_of",
]


@dataclass(frozen=True, slots=True)
class SegmentSlot:
    """A segment the structure allows: its ID and how often it may occur (max -1: unbounded)."""

    name: str
    minimum: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Group:
    """A group of a structure (or the message itself): its v2.xml name and its children in order."""

    name: str  # ORU_R01.PATIENT_RESULT (the message itself: ORU_R01)
    minimum: int
    maximum: int
    children: tuple[SegmentSlot | Group, ...]
    choice: bool = False  # one of its segments (ORM_O01's OBR | RQD | ...): no element of its own


@dataclass(slots=True)
class Placement:
    """Where each segment of a message fits its structure.

    ``groups[i]``: the group path of segment i (outermost first, one entry per group occurrence,
    as ``(group name, occurrence number)``); the segments from ``unplaced`` on did not fit (None: all did).
    ``missing``: required segments or groups absent, as (name, index of the segment before which
    they were expected).
    """

    groups: list[tuple[tuple[str, int], ...]] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)
    unplaced: int | None = None


def _group_name(structure: str, hl7apy_name: str) -> str:
    """hl7apy's ``ORU_R01_PATIENT_RESULT`` as v2.xml writes it: ``ORU_R01.PATIENT_RESULT``."""
    prefix = f"{structure}_"
    return f"{structure}.{hl7apy_name[len(prefix) :]}" if hl7apy_name.startswith(prefix) else hl7apy_name


def _tree(structure: str, name: str, cardinality: tuple[int, int], reference) -> Group:
    built: list[SegmentSlot | Group] = []
    for child_name, child, (minimum, maximum), kind in reference[1]:
        if kind == "GRP":
            built.append(_tree(structure, child_name, (minimum, maximum), child))
        else:
            built.append(SegmentSlot(child_name, minimum, maximum))
    choice = reference[0] == "choice"
    return Group(_group_name(structure, name), cardinality[0], cardinality[1], tuple(built), choice)


@lru_cache(maxsize=512)
def structure_of(version: str, structure: str) -> Group | None:
    """The tree of ``structure`` in ``version`` (hl7apy's nearest library), None when not defined."""
    if not structure:
        return None
    try:
        reference = load_reference(structure, "Message", library_version(version))
    except (ChildNotFound, KeyError, ValueError):
        return None
    return _tree(structure, structure, (1, 1), reference)


@lru_cache(maxsize=1024)
def segment_reference(version: str, segment: str) -> tuple | None:
    """hl7apy's reference of a segment's fields in ``version``: (name, ref, (min, max), kind) each."""
    try:
        return tuple(load_reference(segment, "Segment", library_version(version))[1])
    except (ChildNotFound, KeyError, ValueError):
        return None


@lru_cache(maxsize=1024)
def datatype_reference(version: str, data_type: str) -> tuple | None:
    """hl7apy's reference of a data type as a field of that type: ("sequence", components, type, ...).

    A primitive type is a leaf; None when the version does not define the type.
    """
    try:
        components = load_reference(data_type, "Datatypes_Structs", library_version(version))
    except (ChildNotFound, KeyError, ValueError):
        return None
    return ("sequence", tuple(components), data_type, None, None, -1)


@lru_cache(maxsize=2048)
def leaf_table(version: str, table: str) -> frozenset[str] | None:
    """The values hl7apy knows for table ``table`` ("HL70001") in ``version``; None when it has none."""
    try:
        values = load_reference(table, "Table", library_version(version))[1]
    except (ChildNotFound, KeyError, ValueError):
        return None
    return frozenset(values) if values else None


def _is_z(name: str) -> bool:
    return name.startswith("Z")


class _Matcher:
    """One greedy match of segment IDs against a tree (a fresh one per message)."""

    def __init__(self, names: Sequence[str]):
        self.names = names
        self.groups: list[tuple[tuple[str, int], ...]] = [()] * len(names)

    def skip_z(self, position: int, path: tuple) -> int:
        while position < len(self.names) and _is_z(self.names[position]):
            self.groups[position] = path
            position += 1
        return position

    def group(self, group: Group, position: int, path: tuple, missing: list) -> int:
        """Match one occurrence of ``group``'s children from ``position``; the position after it."""
        for child in group.children:
            count = 0
            while child.maximum == -1 or count < child.maximum:
                if isinstance(child, SegmentSlot) or child.choice:
                    if position >= len(self.names) or self.names[position] not in _names_of(child):
                        break
                    self.groups[position] = path
                    position = self.skip_z(position + 1, path)
                else:
                    trial: list = []
                    saved = self.groups[position:]
                    after = self.group(child, position, (*path, (child.name, count + 1)), trial)
                    if after == position or (trial and trial[0][1] == position):
                        # Nothing consumed, or its own first required part absent: not an occurrence.
                        self.groups[position:] = saved
                        break
                    missing.extend(trial)
                    position = after
                count += 1
            if count < child.minimum:
                choice = isinstance(child, Group) and child.choice
                missing.append((" | ".join(_names_of(child)) if choice else child.name, position))
        return position


def _names_of(slot: SegmentSlot | Group) -> tuple[str, ...]:
    """The segment IDs that fill a slot: its own, or for a choice those of its segments."""
    if isinstance(slot, SegmentSlot):
        return (slot.name,)
    return tuple(child.name for child in slot.children if isinstance(child, SegmentSlot))


def place(tree: Group, names: Sequence[str]) -> Placement:
    """Fit the segment IDs ``names`` (MSH first) to ``tree``; see Placement."""
    matcher = _Matcher(names)
    missing: list[tuple[str, int]] = []
    position = matcher.group(tree, 0, (), missing)
    return Placement(
        groups=matcher.groups,
        missing=missing,
        unplaced=position if position < len(names) else None,
    )
