"""Record fixtures: a migrated database (SQLite and PostgreSQL), an ingestor, and a way to feed it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.model import NewMessage, Status
from engine.record.ingest import IngestResult, RecordIngestor
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade

SAMPLES = Path(__file__).parent.parent / "samples" / "record"
RECEIVED = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)
#: The journey of docs/record.md: registration, booking, admission, results, correction, charges,
#: duplicate, merge.
JOURNEY = sorted(path.name for path in SAMPLES.glob("*.hl7"))
#: A clock for the ingestor: the record's own timestamps (history, links) are all this moment.
NOW = datetime(2024, 4, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def record_url(request) -> str:
    """The URL of an empty database, once SQLite and once PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def engine(record_url):
    """An engine on a database migrated to head (messages and record tables)."""
    engine = create_engine_for(record_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ingestor(engine) -> RecordIngestor:
    """A RecordIngestor with the default identity rule and a fixed clock."""
    return RecordIngestor(engine, clock=lambda: NOW)


def hl7(event: str, time: str, *segments: str, sender: str = "PMS") -> str:
    """A v2.5.1 message from ``sender`` with MSH-9 ``event`` created at ``time`` (and an EVN for ADT)."""
    msh = f"MSH|^~\\&|{sender}|CLINIC|HUB|REGION|{time}||{event}|{sender}{time}|P|2.5.1"
    evn = [f"EVN|{event.split('^')[1]}|{time}"] if event.startswith("ADT") else []
    return "\r".join([msh, *evn, *segments]) + "\r"


def store_messages(engine, raws: list[bytes], received_at: datetime = RECEIVED) -> list[int]:
    """Store ``raws`` as messages (the record's facts reference them) in one transaction; their ids."""
    empty = dict.fromkeys(
        (
            "sending_application",
            "sending_facility",
            "receiving_application",
            "receiving_facility",
            "message_code",
            "trigger_event",
            "message_structure",
            "control_id",
            "version",
            "processing_id",
            "charset",
        ),
        "",
    )
    return MessageRepository(engine).insert(
        [
            NewMessage(
                raw=raw,
                received_at=received_at,
                listener="test",
                peer="127.0.0.1",
                status=Status.RECEIVED,
                channel="record",
                ack_code="AA",
                ack=None,
                **empty,
            )
            for raw in raws
        ]
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


@pytest.fixture
def feed(engine, ingestor) -> Feeder:
    """A Feeder on the test database."""
    return Feeder(engine, ingestor)


def feed_journey(feed: Feeder) -> list[IngestResult]:
    """Feed the journey's messages in order; their results."""
    return [feed(name)[1] for name in JOURNEY]
