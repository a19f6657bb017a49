"""Store fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twisted.internet import defer, task

from engine.model import NewDelivery, NewMessage, ProcessingResult, Status
from engine.store.configs import ConfigRepository
from engine.store.db import create_engine_for
from engine.store.message_store import MessageStore
from engine.store.messages import MessageRepository, StoredMessage
from engine.store.migrations import upgrade
from engine.store.queues import QueueRepository
from engine.store.schema import source_files

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request) -> str:
    """The URL of an empty database, once SQLite and once PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def backend(store_url) -> str:
    """``sqlite`` or ``postgresql``."""
    return make_url(store_url).get_backend_name()


def _new_message(n: int = 0, **columns) -> NewMessage:
    values = dict(
        raw=f"MSH|^~\\&|LAB|NORTH|EHR|SOUTH|20240301120000||ADT^A01^ADT_A01|C{n}|P|2.5\rPID|1||{n}\r".encode(),
        received_at=T0 + timedelta(minutes=n),
        listener="mllp-in",
        peer=f"127.0.0.1:{40000 + n}",
        status=Status.RECEIVED,
        channel="adt",
        sending_application="LAB",
        sending_facility="NORTH",
        receiving_application="EHR",
        receiving_facility="SOUTH",
        message_code="ADT",
        trigger_event="A01",
        message_structure="ADT_A01",
        control_id=f"C{n}",
        version="2.5",
        processing_id="P",
        charset="",
        ack_code="AA",
        ack=f"MSH|^~\\&|EHR|SOUTH|LAB|NORTH|20240301120001||ACK^A01|A{n}|P|2.5\rMSA|AA|C{n}\r".encode(),
    )
    values.update(columns)
    return NewMessage(**values)


@pytest.fixture
def make_message():
    """A NewMessage factory: ``make_message(n, **columns)``, control id ``C<n>``, received T0 + n minutes."""
    return _new_message


@pytest.fixture
def engine(store_url):
    """An engine on a freshly migrated database."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def repository(engine):
    """A MessageRepository on a freshly migrated database."""
    return MessageRepository(engine)


@pytest.fixture
def queues(engine):
    """A QueueRepository on the same database as ``repository``."""
    return QueueRepository(engine)


@pytest.fixture
def configs(engine):
    """A ConfigRepository on the same database as ``repository``."""
    return ConfigRepository(engine)


def expected_message(message_id: int, new: NewMessage, events=()) -> StoredMessage:
    """What get() should return for a message stored from ``new``."""
    columns = {f.name: getattr(new, f.name) for f in dataclasses.fields(NewMessage) if f.name != "deliveries"}
    return StoredMessage(id=message_id, **columns, deliveries=(), events=tuple(events))


def source_file_rows(engine: sa.Engine) -> list[tuple]:
    """(path, sha256, size, message_count) of every source_files row, in id order."""
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(
                    source_files.c.path,
                    source_files.c.sha256,
                    source_files.c.size,
                    source_files.c.message_count,
                ).order_by(source_files.c.id)
            )
        ]


def queued(message_id: int, *destinations: str, transformed: bytes | None = None) -> ProcessingResult:
    """A QUEUED result with one queued delivery per destination (payload names message and destination)."""
    news = tuple(
        NewDelivery(d, Status.QUEUED, f"OUT{message_id}", f"MSH|{message_id}|{d}\r".encode())
        for d in destinations
    )
    return ProcessingResult(message_id, Status.QUEUED, transformed=transformed, deliveries=news)


def count_commits(engine: sa.Engine) -> list[None]:
    """A list that grows by one for every transaction the engine commits."""
    seen: list[None] = []
    sa.event.listen(engine, "commit", lambda connection: seen.append(None))
    return seen


def later(seconds: float, function, *args) -> defer.Deferred:
    """Call ``function(*args)`` after ``seconds`` on the global reactor."""
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, function, *args)


def _store_opener(url: str):
    """A function that starts MessageStores on ``url`` (global reactor), and one that stops them all."""
    from twisted.internet import reactor

    stores = []

    def open_(**options) -> MessageStore:
        store = MessageStore(url, reactor=reactor, **options)
        store.start()
        stores.append(store)
        return store

    def stop_all() -> None:
        for store in stores:
            pytest_twisted.blockon(store.stop())

    return open_, stop_all


@pytest.fixture
def open_store(store_url):
    """Starts MessageStores on the test database (global reactor); stops them after the test."""
    open_, stop_all = _store_opener(store_url)
    yield open_
    stop_all()


@pytest.fixture
def open_sqlite_store(sqlite_url):
    """Starts MessageStores on a SQLite database: for what only SQLite does (inline commits, the WAL)."""
    open_, stop_all = _store_opener(sqlite_url)
    yield open_
    stop_all()


class WriteLock:
    """Another connection holding the lock that the store's writer needs to insert."""

    def __init__(self, url: str):
        self._url = make_url(url)
        self._connection = None

    def hold(self) -> None:
        if self._url.get_backend_name() == "sqlite":
            self._connection = sqlite3.connect(self._url.database, isolation_level=None)
            self._connection.execute("BEGIN EXCLUSIVE")
        else:
            self._connection = psycopg.connect(
                self._url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
            self._connection.execute(
                "LOCK TABLE messages, deliveries, config_history IN ACCESS EXCLUSIVE MODE"
            )

    def release(self) -> None:
        if self._connection is not None:
            self._connection.rollback()
            self._connection.close()
            self._connection = None


@pytest.fixture
def write_lock(store_url):
    """A WriteLock on the test database, released after the test if still held."""
    lock = WriteLock(store_url)
    yield lock
    lock.release()
