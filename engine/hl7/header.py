"""The cheap MSH reader of the intake path, header validation and the MSH-9.3 event map.

``read_header`` splits only the first segment; it never builds a ``Message``. Whether the
header is acceptable is a separate question, answered by ``validate_header`` with HL7 table
0357 codes (docs/hl7.md §4, §5).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import HL7Error
from engine.hl7.message import Delimiters, unescape

__all__ = [
    "KNOWN_VERSIONS",
    "Header",
    "HeaderProblem",
    "is_ack",
    "patient_id",
    "read_header",
    "structure_for",
    "validate_header",
]

#: HL7 v2 releases (table 0104) accepted in MSH-12.1, oldest first.
KNOWN_VERSIONS = (
    "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1",
    "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9",
)  # fmt: skip

_KNOWN_VERSIONS = frozenset(KNOWN_VERSIONS)


class Header:
    """The MSH of a message: ``fields[i]`` is MSH-i raw (fields[0] 'MSH', [1] MSH-1, [2] MSH-2).

    The components the intake path asks for (MSH-9, MSH-11.1, MSH-12.1) are split once, when
    the header is read; everything else is a plain index into ``fields``. Read-only by convention.
    """

    __slots__ = (
        "delimiters",
        "fields",
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "message_code",
        "trigger_event",
        "_structure",
        "control_id",
        "processing_id",
        "version",
        "accept_ack_type",
        "application_ack_type",
    )

    def __init__(self, delimiters: Delimiters, fields: tuple[str, ...]):
        self.delimiters = delimiters
        self.fields = fields
        padded = fields if len(fields) >= 17 else fields + ("",) * (17 - len(fields))
        # Raw: MSH-3, MSH-4, MSH-5, MSH-6, MSH-10; MSH-15/16 are AL, NE, ER, SU or empty.
        (
            self.sending_application,
            self.sending_facility,
            self.receiving_application,
            self.receiving_facility,
        ) = padded[3:7]
        self.control_id = padded[10]
        self.accept_ack_type, self.application_ack_type = padded[15:17]
        repetition, component = delimiters.repetition, delimiters.component
        message_type = padded[9].split(repetition, 1)[0].split(component, 3)
        parts = len(message_type)
        # MSH-9.1 (e.g. ADT), MSH-9.2 (e.g. A04), MSH-9.3 as sent; MSH-11.1 (P, T or D);
        # MSH-12.1 (e.g. 2.5.1).
        self.message_code = message_type[0]
        self.trigger_event = message_type[1] if parts > 1 else ""
        self._structure = message_type[2] if parts > 2 else ""
        self.processing_id = padded[11].split(repetition, 1)[0].split(component, 1)[0]
        self.version = padded[12].split(repetition, 1)[0].split(component, 1)[0]

    def __repr__(self) -> str:
        return f"Header({self.delimiters!r}, {self.fields!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Header) and (self.delimiters, self.fields) == (
            other.delimiters,
            other.fields,
        )

    def __hash__(self) -> int:
        return hash((self.delimiters, self.fields))

    def field(self, n: int) -> str:
        """Return raw MSH-n ('' when absent)."""
        return self.fields[n] if 0 <= n < len(self.fields) else ""

    @property
    def declared_structure(self) -> str:
        """MSH-9.3 as sent ('' when absent)."""
        return self._structure

    @property
    def message_structure(self) -> str:
        """MSH-9.3, or the structure the event map gives when MSH-9.3 is empty."""
        return self._structure or structure_for(self.message_code, self.trigger_event, self.version)

    @property
    def charset(self) -> str:
        """MSH-18, first repetition."""
        return self.field(18).split(self.delimiters.repetition, 1)[0]

    @property
    def message_type(self) -> str:
        """``CODE^TRIGGER`` (always written with ``^``), or ``CODE`` when there is no trigger."""
        code, trigger = self.message_code, self.trigger_event
        return f"{code}^{trigger}" if trigger else code


@dataclass(frozen=True, slots=True)
class HeaderProblem:
    """Why a header is unacceptable: table 0357 code, ERR-2 location, text for ERR."""

    code: int
    location: tuple
    text: str


def read_header(text: str) -> Header:
    """Split the first segment of decoded message text into a Header; leading whitespace is skipped.

    Raises HL7Error 100 when the text does not start with ``MSH`` and a field separator,
    HL7Error 102 when MSH-1/MSH-2 are unusable. The fields are not validated here.
    """
    text = text.lstrip()
    if not text.startswith("MSH") or len(text) < 4 or text[3] in "\r\n":
        raise HL7Error("no MSH segment at the start of the message", code=100, location=("MSH",))
    end = text.find("\r")
    if end < 0:
        end = len(text)
    line_feed = text.find("\n", 0, end)
    segment = text[: line_feed if line_feed >= 0 else end]
    delimiters = Delimiters.from_header_segment(segment)
    return Header(delimiters, ("MSH", segment[3], *segment[4:].split(segment[3])))


def patient_id(text: str, delimiters: Delimiters) -> str:
    """PID-3.1 of the first identifier of the first PID segment, unescaped; PID-2.1 when PID-3 is empty
    (before 2.3.1 senders often put the MRN there); '' when the message has no PID.

    What an operator searches a patient's messages by. Found with a few string scans, like the
    header: the intake path never parses the whole message.
    """
    marker = "PID" + delimiters.field
    start = text.find("\r" + marker)
    line_feed = text.find("\n" + marker, 0, start if start >= 0 else len(text))
    if line_feed >= 0:
        start = line_feed
    if start < 0:
        return ""
    start += len(marker) + 1
    end = text.find("\r", start)
    if end < 0:
        end = len(text)
    line_feed = text.find("\n", start, end)
    if line_feed >= 0:
        end = line_feed
    fields = text[start:end].split(delimiters.field, 3)
    for value in (fields[2] if len(fields) > 2 else "", fields[1] if len(fields) > 1 else ""):
        value = value.split(delimiters.repetition, 1)[0].split(delimiters.component, 1)[0]
        if value:
            return unescape(value, delimiters) if delimiters.escape and delimiters.escape in value else value
    return ""


def _is_code(value: str) -> bool:
    return len(value) == 3 and value.isascii() and value.isalnum()


def validate_header(header: Header) -> list[HeaderProblem]:
    """Return every reason to reject the header (empty when acceptable), in field order."""
    problems = []
    code, trigger = header.message_code, header.trigger_event
    if not code:
        problems.append(HeaderProblem(101, ("MSH", 1, 9), "MSH-9 message type missing"))
    elif not _is_code(code):
        problems.append(HeaderProblem(200, ("MSH", 1, 9, 1, 1), f"unsupported message type {code!r}"))
    if trigger and not _is_code(trigger):
        problems.append(HeaderProblem(201, ("MSH", 1, 9, 1, 2), f"unsupported event code {trigger!r}"))
    if not header.control_id:
        problems.append(HeaderProblem(101, ("MSH", 1, 10), "MSH-10 message control id missing"))
    version = header.version
    if version and version not in _KNOWN_VERSIONS:
        problems.append(HeaderProblem(203, ("MSH", 1, 12, 1, 1), f"unsupported version id {version!r}"))
    return problems


def is_ack(header: Header) -> bool:
    """True when the message is an acknowledgement (MSH-9.1 or MSH-9.3 is ``ACK``)."""
    return header.message_code == "ACK" or header.declared_structure == "ACK"


# ---------------------------------------------------------------------------------------------
# Event -> message structure, for messages without MSH-9.3 (docs/hl7.md §4). Rows come from HAPI's
# per-version eventmap files (2.4-2.8) for the ADT, SIU, MDM, ORU families; DFT, VXU, BAR and
# ORM events are their own structures. Before 2.4 the rows are those whose target structure
# hl7apy also defines for 2.3/2.3.1. tests/hl7/test_header.py checks them against hl7apy.
# Each row: (structure, events, first version, last version or None).

_EVENT_ROWS = (
    ("ADT_A01", "A04 A08 A13", "2.3", None),
    ("ADT_A06", "A07", "2.3", None),
    ("ADT_A09", "A10 A11", "2.3", None),
    ("ADT_A09", "A12", "2.4", "2.4"),
    ("ADT_A05", "A14 A28 A31", "2.4", None),
    ("ADT_A21", "A22 A23 A25 A26 A27 A29 A32 A33", "2.4", None),
    ("ADT_A30", "A34 A35 A36 A46 A47 A48 A49", "2.3", "2.6"),
    ("ADT_A39", "A40 A41 A42", "2.3", None),
    ("ADT_A43", "A44", "2.3", "2.6"),
    ("ADT_A44", "A47", "2.7", None),
    ("ADT_A43", "A49", "2.7", None),
    ("ADT_A50", "A51", "2.3", None),
    ("ADT_A52", "A53", "2.4", None),
    ("ADT_A52", "A55", "2.4", "2.5.1"),
    ("ADT_A54", "A55", "2.6", None),
    ("ADT_A61", "A62", "2.4", None),
    ("SIU_S12", "S13 S14 S15 S16 S17 S18 S19 S20 S21 S22 S23 S24 S26", "2.3", None),
    ("SIU_S12", "S27", "2.7", None),
    ("MDM_T01", "T03 T05 T07 T09 T11", "2.3", None),
    ("MDM_T02", "T04 T06 T08 T10", "2.3", None),
    ("ORU_R30", "R31 R32", "2.5", None),
    ("ORU_R01", "R40", "2.8", None),
)

_FAMILIES = {structure.split("_")[0] for structure, *_ in _EVENT_ROWS}


def _build_event_maps() -> dict[str, dict[str, str]]:
    maps: dict[str, dict[str, str]] = {version: {} for version in KNOWN_VERSIONS}
    for structure, events, first, last in _EVENT_ROWS:
        code = structure.split("_")[0]
        start = KNOWN_VERSIONS.index(first)
        stop = KNOWN_VERSIONS.index(last) + 1 if last else len(KNOWN_VERSIONS)
        for version in KNOWN_VERSIONS[start:stop]:
            for event in events.split():
                maps[version][f"{code}_{event}"] = structure
    return maps


_EVENT_MAPS = _build_event_maps()


def structure_for(code: str, trigger: str, version: str) -> str:
    """Return the message structure for an event: ``ACK``, the version's event map, or CODE_TRIGGER.

    '' when there is no trigger (and the code is not ACK). An empty or unknown version uses the
    newest map.
    """
    if code == "ACK":
        return "ACK"
    if not code or not trigger:
        return ""
    name = f"{code}_{trigger}"
    if code not in _FAMILIES:
        return name
    event_map = _EVENT_MAPS.get(version)
    if event_map is None:
        event_map = _EVENT_MAPS[KNOWN_VERSIONS[-1]]
    return event_map.get(name, name)
