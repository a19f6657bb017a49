"""Driver fixtures: the store's migrated engine (SQLite and PostgreSQL) with the driver tests' tables."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.fakes.driver import metadata


@pytest.fixture
def tables(engine) -> sa.Engine:
    """The store's engine with the driver's test tables created."""
    metadata.create_all(engine)
    return engine
