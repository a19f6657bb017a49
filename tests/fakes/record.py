"""Helpers of the patient record's tests: the journey's samples, HL7 text made to measure, stored messages.

``Feeder`` stores a message and applies it, as the record destination does; the ``feed`` fixture
(tests/record/conftest.py) gives one on the test database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from engine.hl7.batch import split_batch
from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.record import schema
from engine.record.ingest import IngestResult, RecordIngestor
from engine.store.messages import MessageRepository
from tests.fakes.corpus import corpus_entries
from tests.fakes.messages import new_message

SAMPLES = Path(__file__).parent.parent / "samples" / "record"
RECEIVED = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)
#: The journey of docs/record.md: registration, booking, admission, results, correction, charges,
#: duplicate, merge.
JOURNEY = sorted(path.name for path in SAMPLES.glob("*.hl7"))
#: A clock for the ingestor: the record's own timestamps (history, links) are all this moment.
NOW = datetime(2024, 4, 2, 8, 0, tzinfo=UTC)

#: A patient known to PMS by P-1, with an address; and a visit of hers, V-1, in ward W1.
PID = "PID|1||P-1^^^PMS^PI||DOE^JANE^Q||19700101|F|||1 Main St^^Town^ST^11111"
PV1 = "PV1|1|I|W1^101^A^HOSP||||||||||||||||V-1^^^PMS^VN"


def hl7(event: str, time: str, *segments: str, sender: str = "PMS") -> str:
    """A v2.5.1 message from ``sender`` with MSH-9 ``event`` created at ``time`` (and an EVN for ADT)."""
    msh = f"MSH|^~\\&|{sender}|CLINIC|HUB|REGION|{time}||{event}|{sender}{time}|P|2.5.1"
    evn = [f"EVN|{event.split('^')[1]}|{time}"] if event.startswith("ADT") else []
    return "\r".join([msh, *evn, *segments]) + "\r"


def register(feed, pid: str, *, sender: str = "PMS", time: str = "20240101080000", event: str = "A04") -> int:
    """Apply an ADT registering (or updating) the patient of ``pid``; its patient id."""
    return feed(hl7(f"ADT^{event}^ADT_A01", time, pid, sender=sender))[1].patient_id


def store_messages(engine, raws: list[bytes], received_at: datetime = RECEIVED) -> list[int]:
    """Store ``raws`` as messages (the record's facts reference them) in one transaction; their ids."""
    return MessageRepository(engine).insert(
        [new_message(raw, received_at=received_at, channel="record") for raw in raws]
    )


def store_message(engine, raw: bytes, received_at: datetime = RECEIVED) -> int:
    """Store ``raw`` in the messages table (the record's facts reference it) and return its id."""
    return store_messages(engine, [raw], received_at)[0]


class Feeder:
    """Stores a message and applies it: ``feed(sample name or HL7 text)`` gives (message id, IngestResult)."""

    def __init__(self, engine, ingestor: RecordIngestor):
        self.engine = engine
        self.ingestor = ingestor

    def __call__(self, message: str, received_at: datetime = RECEIVED) -> tuple[int, IngestResult]:
        raw = (
            (SAMPLES / message).read_bytes()
            if message.endswith(".hl7")
            else message.replace("\n", "\r").encode()
        )
        message_id = store_message(self.engine, raw, received_at)
        return message_id, self.apply(message_id, raw, received_at)

    def apply(self, message_id: int, raw: bytes, received_at: datetime = RECEIVED) -> IngestResult:
        """Apply already stored bytes again under their message id."""
        return self.ingestor.apply(message_id, Message.parse(decode(raw).text), received_at)


def feed_journey(feed: Feeder) -> list[IngestResult]:
    """Feed the journey's messages in order; their results."""
    return [feed(name)[1] for name in JOURNEY]


def corpus_messages() -> list[tuple[str, str]]:
    """(file#n, text) of every ADT, SIU, ORU and DFT corpus message the engine accepts, batches split."""
    found = []
    for entry in corpus_entries():
        if entry.message_type[:3] not in ("ADT", "SIU", "ORU", "DFT") or entry.expect not in ("AA", "batch"):
            continue
        text = decode(entry.path.read_bytes()).text
        members = split_batch(text).messages if entry.expect == "batch" else (text,)
        found.extend((f"{entry.file}#{n}", member) for n, member in enumerate(members, start=1))
    return found


def history(engine, entity: str, *columns: str) -> list[tuple]:
    """The ``columns`` of every record_history row about ``entity`` (a record table's name), oldest first."""
    h = schema.history
    with engine.connect() as connection:
        selected = sa.select(*(h.c[name] for name in columns)).where(h.c.entity == entity).order_by(h.c.id)
        return [tuple(row) for row in connection.execute(selected)]
