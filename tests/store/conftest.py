"""Store fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from engine.store.configs import ConfigRepository
from engine.store.messages import MessageRepository
from engine.store.queues import QueueRepository
from tests.fakes.messages import lab_message
from tests.fakes.store import NOW, WriteLock


@pytest.fixture
def backend(store_url) -> str:
    """``sqlite`` or ``postgresql``."""
    return make_url(store_url).get_backend_name()


@pytest.fixture
def make_message():
    """A NewMessage factory: ``make_message(n, **columns)``, control id ``C<n>``, received T0 + n minutes."""
    return lab_message


@pytest.fixture
def repository(engine):
    """A MessageRepository on a freshly migrated database."""
    return MessageRepository(engine)


@pytest.fixture
def queues(engine):
    """A QueueRepository on the same database as ``repository``, whose clock stands still at NOW."""
    return QueueRepository(engine, clock=lambda: NOW)


@pytest.fixture
def configs(engine):
    """A ConfigRepository on the same database as ``repository``."""
    return ConfigRepository(engine)


@pytest.fixture
def write_lock(store_url):
    """A WriteLock on the test database, released after the test if still held."""
    lock = WriteLock(store_url)
    yield lock
    lock.release()
