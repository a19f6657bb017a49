"""Validation of a message against its version and structure, as hl7apy defines them.

``validate(text)`` returns a ``Report``: the version and structure used and the findings, each
plain data (location, table 0357 code, severity, text). Checked: the segments' order, groups and
cardinality (100), required fields (101), field repetitions and data types (102), values of the
tables hl7apy knows (103, a warning), lengths where the version sets them (104, a warning). A
finding's text never quotes the message's values (they are patient data): it names the rule.

Structures and segment definitions are read from hl7apy once per version (engine.hl7.structure).
Validation never raises on input: a message it cannot read gives one finding saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import HL7Error
from engine.hl7.ack import AckError
from engine.hl7.header import read_header
from engine.hl7.message import Delimiters, Segment, split_segments
from engine.hl7.names import library_version
from engine.hl7.structure import Group, leaf_table, place, segment_reference, structure_of

__all__ = ["LEVELS", "Finding", "Report", "validate"]

#: The values of a channel's ``validate`` key.
LEVELS = ("off", "tolerant", "strict")

#: Severities (HL7 table 0516): what fails strict validation is an error.
ERROR, WARNING = "E", "W"

# Data types whose text has a form to check; others (ST, TX, FT, ID, IS ...) take any text.
_FORMS = {
    "NM": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)"),
    "SI": re.compile(r"\d+"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2})?)?"),
    "DTM": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?([+-]\d{4})?"),
}
_FORMS["TS"] = _FORMS["DTM"]  # TS is a leaf before 2.5 (later a composite whose TS.1 is DTM)
# Tables whose values hl7apy lists for HL7-defined (ID) and user-defined (IS) fields.
_TABLE_TYPES = frozenset({"ID", "IS"})
_NULL = '""'  # the explicit HL7 null: present, no value
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: where (ERR-2 parts), the table 0357 code, severity (E/W) and a text without values."""

    segment: str
    occurrence: int
    field: int = 0
    repetition: int = 0
    component: int = 0
    subcomponent: int = 0
    code: int = 102
    severity: str = ERROR
    text: str = ""

    @property
    def location(self) -> str:
        """The field path of engine.hl7.message (``PID-7``, ``OBX[2]-5[2].1``); ``PID`` for a segment."""
        if not self.segment:
            return f"line {self.occurrence} without segment ID"
        name = self.segment if self.occurrence <= 1 else f"{self.segment}[{self.occurrence}]"
        if not self.field:
            return name
        path = f"{name}-{self.field}" + (f"[{self.repetition}]" if self.repetition > 1 else "")
        for part in (self.component, self.subcomponent):
            if not part:
                break
            path += f".{part}"
        return path

    def ack_error(self) -> AckError:
        """The finding as an ERR entry (ERR-2 segment ^ sequence ^ field ^ repetition ^ component ^ sub)."""
        parts = (
            self.segment,
            self.occurrence,
            self.field,
            self.repetition,
            self.component,
            self.subcomponent,
        )
        while parts and not parts[-1]:
            parts = parts[:-1]
        return AckError(self.code, f"{self.location}: {self.text}", parts, self.severity)

    def to_json_dict(self) -> dict:
        """The finding as JSON (the command line and the API)."""
        return {"location": self.location, "code": self.code, "severity": self.severity, "text": self.text}


@dataclass(frozen=True, slots=True)
class Report:
    """What validation found in one message, and what it checked it against."""

    version: str  # hl7apy's library version used
    structure: str  # '' when the message names none hl7apy defines (its segments are still checked)
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> bool:
        """True when a finding is an error: the message fails strict validation."""
        return any(f.severity == ERROR for f in self.findings)

    def to_json_dict(self) -> dict:
        """The report as JSON."""
        return {
            "version": self.version,
            "structure": self.structure,
            "failed": self.failed,
            "findings": [f.to_json_dict() for f in self.findings],
        }


def validate(text: str, *, version: str | None = None) -> Report:
    """Validate decoded message text against its version and its structure (MSH-9.3 or the event map).

    The version is MSH-12's unless ``version`` is given.
    """
    try:
        header = read_header(text)
    except HL7Error as exc:
        return Report("", "", (Finding("MSH", 1, code=exc.code, text=f"unreadable header: {exc}"),))
    version = library_version(version or header.version)
    delimiters = header.delimiters
    segments = [Segment(raw, delimiters) for raw in split_segments(text.lstrip())]
    # A line that is no segment ID (base64 wrapped by a sender, stray bytes) is named by nothing it holds.
    names = [s.name if _SEGMENT_ID.fullmatch(s.name) else "" for s in segments]
    tree = structure_of(version, header.message_structure)
    findings: list[Finding] = []
    occurrences: dict[str, int] = {}
    numbered = []
    for segment, name in zip(segments, names):
        occurrences[name] = occurrences.get(name, 0) + 1
        numbered.append((segment, occurrences[name]))
    if tree is not None:
        findings.extend(_structure_findings(tree, names, numbered))
    for (segment, occurrence), name in zip(numbered, names):
        if name:
            findings.extend(_segment_findings(version, segment, occurrence, delimiters))
        else:
            findings.append(Finding("", occurrence, code=100, text="line is not a segment (no segment ID)"))
    return Report(version, tree.name if tree is not None else "", tuple(findings))


def _structure_findings(tree: Group, names: list[str], numbered: list) -> list[Finding]:
    placement = place(tree, names)
    findings = []
    for name, before in placement.missing:
        if before < len(names):
            following, occurrence = names[before], numbered[before][1]
            where = following or "a line without segment ID"
        else:
            following, occurrence, where = names[-1], numbered[-1][1], "the end"
        if "." in name or " " in name:
            # A group (ORU_R01.PATIENT_RESULT) or a choice (OBR | RQD): at the segment it should precede.
            what = "group" if "." in name else "segment (one of)"
            text = f"required {what} {name} missing (expected before {where})"
            findings.append(Finding(following, occurrence, code=100, text=text))
        else:
            text = f"required segment missing (expected before {where})"
            findings.append(Finding(name, 1, code=100, text=text))
    if placement.unplaced is not None:
        occurrence = numbered[placement.unplaced][1]
        rest = len(names) - placement.unplaced
        findings.append(
            Finding(
                names[placement.unplaced],
                occurrence,
                code=100,
                text=f"segment out of place for {tree.name}; the {rest} segment(s) from here"
                " do not fit its structure",
            )
        )
    return findings


def _segment_findings(version: str, segment: Segment, occurrence: int, d: Delimiters) -> list[Finding]:
    name = segment.name
    reference = segment_reference(version, name)
    if reference is None:
        if name.startswith("Z"):
            return []
        return [Finding(name, occurrence, code=100, text=f"segment not defined in version {version}")]
    fields = segment.fields
    header = segment.is_header
    findings = []
    for position, (_name, field_reference, (minimum, maximum), _kind) in enumerate(reference, start=1):
        if header and position <= 2:  # MSH-1/MSH-2: the delimiters, read by the header already
            continue
        value = fields[position] if position < len(fields) else ""
        where = (name, occurrence, position)
        if not value:
            if minimum >= 1:
                findings.append(Finding(*where, code=101, text="required field missing"))
            continue
        repetitions = value.split(d.repetition) if not header or position != 2 else [value]
        if maximum != -1 and len(repetitions) > max(maximum, 1):
            findings.append(
                Finding(*where, code=102, text=f"{len(repetitions)} repetitions; at most {maximum} allowed")
            )
        for number, repetition in enumerate(repetitions, start=1):
            if repetition and repetition != _NULL:
                findings.extend(_value_findings(version, field_reference, repetition, d, (*where, number), 0))
    if len(fields) - 1 > len(reference) and any(fields[len(reference) + 1 :]):
        findings.append(
            Finding(
                name,
                occurrence,
                len(reference) + 1,
                code=102,
                severity=WARNING,
                text=f"field beyond the {len(reference)} the segment defines in version {version}",
            )
        )
    return findings


def _value_findings(version: str, reference, value: str, d: Delimiters, where: tuple, depth: int):
    """Findings of one field repetition (depth 0), component (1) or subcomponent (2) against its reference."""
    kind, data_type, table, max_length = reference[0], reference[2], reference[4], reference[5]
    if kind == "leaf" or depth == 2 or (depth == 1 and d.subcomponent is None):
        return _leaf_findings(version, data_type, table, max_length, value, where)
    separator = d.component if depth == 0 else d.subcomponent
    parts = value.split(separator)
    children = reference[1]
    findings = []
    for index, part in enumerate(parts, start=1):
        if not part or part == _NULL:
            continue
        located = (*where, index)
        if index > len(children):
            findings.append(
                Finding(
                    *located,
                    code=102,
                    severity=WARNING,
                    text=f"{'component' if depth == 0 else 'subcomponent'} beyond the {len(children)}"
                    f" that {data_type} defines",
                )
            )
            break
        findings.extend(_value_findings(version, children[index - 1][1], part, d, located, depth + 1))
    return findings


def _leaf_findings(version: str, data_type, table, max_length, value: str, where: tuple) -> list[Finding]:
    findings = []
    form = _FORMS.get(data_type)
    if form is not None and not form.fullmatch(value):
        findings.append(Finding(*where, code=102, text=f"not a valid {data_type} value"))
    if table and data_type in _TABLE_TYPES:
        known = leaf_table(version, table)
        if known is not None and value not in known:
            findings.append(
                Finding(*where, code=103, severity=WARNING, text=f"value not in table {table[3:]}")
            )
    if max_length is not None and -1 < max_length < len(value):
        findings.append(
            Finding(
                *where, code=104, severity=WARNING, text=f"longer than the {max_length} characters allowed"
            )
        )
    return findings
