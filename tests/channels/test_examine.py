"""The Examiner's rows: every column lands under its own name, however the row is built."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.channels.examine import HEADER_COLUMNS, Examiner, header_columns
from engine.channels.spec import ChannelConfig
from engine.config import ListenerConfig
from engine.hl7.ack import Sender
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.model import NewMessage, Status

RAW = (
    b"MSH|^~\\&|LAB^1.2^ISO|NORTH|HUB|CENTRAL|20260101120000||ADT^A04|CTL-7|T|2.5.1||||||8859/1\r"
    b"PID|1||MRN-42^^^PMS^MR||DOE^JANE\r"
)
NOW = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)


def _examiner() -> Examiner:
    channel = ChannelConfig(
        name="adt",
        source="main",
        accept={"types": ["*"]},
        destinations=[{"name": "out", "type": "file", "directory": "out"}],
    )
    return Examiner(
        ListenerConfig(name="main", endpoint="tcp:0"),
        [channel],
        sender=Sender("HL7ENGINE", "HUB"),
        default_charset="ascii",
        clock=lambda: NOW,
        control_ids=lambda: "ACK-1",
    )


def test_an_accepted_messages_row_holds_each_value_under_its_column():
    """The row of an accepted message (a batch member) has every column from the right source."""
    decoded = decode(RAW, "ascii")
    verdict = _examiner().message(decoded.text, RAW, decoded, "10.0.0.9:4000", NOW, batch_id="B-1", index=3)
    (row,) = verdict.rows
    expected = NewMessage(
        raw=RAW,
        received_at=NOW,
        listener="main",
        peer="10.0.0.9:4000",
        status=Status.RECEIVED,
        channel="adt",
        **header_columns(read_header(decoded.text)),
        charset="8859/1",
        ack_code="AA",
        ack=verdict.ack.encode("ascii"),
        batch_control_id="B-1",
        batch_index=3,
        patient_id="MRN-42",
    )
    assert row == expected
    header = read_header(decoded.text)
    assert {name: getattr(row, name) for name in HEADER_COLUMNS} == {
        name: getattr(header, name) for name in HEADER_COLUMNS
    }
    assert (row.sending_application, row.receiving_facility, row.message_structure, row.processing_id) == (
        "LAB^1.2^ISO",
        "CENTRAL",
        "ADT_A01",
        "T",
    )
