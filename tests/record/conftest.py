"""Record fixtures: an ingestor on a migrated database (SQLite and PostgreSQL), and a way to feed it."""

from __future__ import annotations

import pytest

from engine.record.ingest import RecordIngestor
from tests.fakes.record import NOW, Feeder


@pytest.fixture
def ingestor(engine) -> RecordIngestor:
    """A RecordIngestor with the default identity rule and a fixed clock."""
    return RecordIngestor(engine, clock=lambda: NOW)


@pytest.fixture
def feed(engine, ingestor) -> Feeder:
    """A Feeder on the test database."""
    return Feeder(engine, ingestor)
