"""A field-level difference between two versions of one message: what a channel's stages changed.

Segments are paired by ID and occurrence (the second OBX with the second OBX); a segment only one
side has is added or removed. Paired segments are compared field by field, repetition by
repetition, component by component, and each change is named by its field path (``PID-5.1``,
``PID-3[2].1``, ``OBX[2]-5``) and, where the message's version defines them, the names of the field
and component (``Patient Name / Family Name``). Values are shown as written (escaped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.hl7.message import Delimiters, Message, Segment
from engine.hl7.names import component_name, field_name

__all__ = ["Change", "diff_messages"]


@dataclass(frozen=True)
class Change:
    """One difference: a field part changed (old and new), or a whole segment added or removed."""

    path: str  # PID-5.1, PID-3[2].1, OBX[2]-5; a segment alone (ZPI, NTE[2]) when added or removed
    kind: str  # "changed", "added" (a segment), "removed" (a segment)
    old: str  # '' when the part was empty or the segment absent
    new: str
    name: str | None = None  # the field's (and component's) name for the message's version

    def as_dict(self) -> dict:
        """The change as plain data (JSON)."""
        return {"path": self.path, "kind": self.kind, "name": self.name, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path}: {self.new}"
        if self.kind == "removed":
            return f"- {self.path}: {self.old}"
        named = f" ({self.name})" if self.name else ""
        return f"{self.path}{named}: {self.old!r} -> {self.new!r}"


def _keyed(message: Message) -> dict[tuple[str, int], Segment]:
    seen: Counter[str] = Counter()
    keyed = {}
    for segment in message.segments:
        seen[segment.name] += 1
        keyed[(segment.name, seen[segment.name])] = segment
    return keyed


def diff_messages(before: Message, after: Message, version: str) -> list[Change]:
    """The changes that turn ``before`` into ``after``: the output's segments in order, then those removed."""
    old, new = _keyed(before), _keyed(after)
    counts = Counter(name for name, _ in old) | Counter(name for name, _ in new)
    changes: list[Change] = []
    for key, segment in new.items():
        label = _label(key, counts)
        if key not in old:
            changes.append(Change(label, "added", "", segment.raw))
        else:
            changes.extend(
                _segment_changes(label, old[key], segment, before.delimiters, after.delimiters, version)
            )
    gone = [(key, segment) for key, segment in old.items() if key not in new]
    changes.extend(Change(_label(key, counts), "removed", segment.raw, "") for key, segment in gone)
    return changes


def _label(key: tuple[str, int], counts: Counter[str]) -> str:
    name, occurrence = key
    return f"{name}[{occurrence}]" if counts[name] > 1 else name


def _segment_changes(
    label: str, before: Segment, after: Segment, old_d: Delimiters, new_d: Delimiters, version: str
) -> list[Change]:
    segment = before.name
    old_fields, new_fields = before.fields, after.fields
    changes = []
    for n in range(1, max(len(old_fields), len(new_fields))):
        old = old_fields[n] if n < len(old_fields) else ""
        new = new_fields[n] if n < len(new_fields) else ""
        if old == new:
            continue
        if before.is_header and n <= 2:  # the delimiters themselves: never split
            changes.append(Change(f"{label}-{n}", "changed", old, new, field_name(version, segment, n)))
            continue
        old_reps, new_reps = old.split(old_d.repetition), new.split(new_d.repetition)
        repeated = max(len(old_reps), len(new_reps)) > 1
        for r in range(max(len(old_reps), len(new_reps))):
            old_rep = old_reps[r] if r < len(old_reps) else ""
            new_rep = new_reps[r] if r < len(new_reps) else ""
            if old_rep != new_rep:
                path = f"{label}-{n}[{r + 1}]" if repeated else f"{label}-{n}"
                changes.extend(_component_changes(path, segment, n, old_rep, new_rep, old_d, new_d, version))
    return changes


def _component_changes(
    path: str,
    segment: str,
    field: int,
    old: str,
    new: str,
    old_d: Delimiters,
    new_d: Delimiters,
    version: str,
) -> list[Change]:
    old_parts, new_parts = old.split(old_d.component), new.split(new_d.component)
    name = field_name(version, segment, field)
    if len(old_parts) == 1 and len(new_parts) == 1:
        return [Change(path, "changed", old, new, name)]
    changes = []
    for c in range(max(len(old_parts), len(new_parts))):
        old_part = old_parts[c] if c < len(old_parts) else ""
        new_part = new_parts[c] if c < len(new_parts) else ""
        if old_part != new_part:
            part = component_name(version, segment, field, c + 1)
            named = f"{name} / {part}" if name and part else name
            changes.append(Change(f"{path}.{c + 1}", "changed", old_part, new_part, named))
    return changes
