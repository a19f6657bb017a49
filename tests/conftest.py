"""Fixtures of more than one test package: throwaway databases, migrated or with a started store on them.

A fixture that only one package uses lives in that package's conftest.py; plain helpers and fakes
live in tests/fakes/.
"""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest
import pytest_twisted
from psycopg import sql
from twisted.internet import reactor

from engine.store.db import create_engine_for
from engine.store.message_store import MessageStore
from engine.store.migrations import upgrade

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
_POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="session")
def _postgres_unreachable() -> str | None:
    """Why the PostgreSQL test server cannot be used, or None when it can (asked once per session)."""
    try:
        with psycopg.connect(_POSTGRES_ADMIN):
            return None
    except psycopg.OperationalError as error:
        return str(error).strip()


@pytest.fixture
def postgres_url(_postgres_unreachable: str | None):
    """A fresh, empty PostgreSQL database (hl7engine_test_<random>), dropped afterwards."""
    if _postgres_unreachable is not None:
        reason = f"PostgreSQL on 127.0.0.1:5432 is not reachable: {_postgres_unreachable}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"hl7engine_test_{secrets.token_hex(6)}"
    with psycopg.connect(_POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(_POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite database file in a directory that does not exist yet."""
    return f"sqlite:///{tmp_path / 'store' / 'messages.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request) -> str:
    """The URL of an empty database, once SQLite and once PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def engine(store_url):
    """An engine on a database migrated to head (the store's tables and the record's)."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _store_opener(url: str):
    """A function that starts MessageStores on ``url`` (global reactor unless given one), and one that
    stops them all."""
    stores = []

    def open_(**options) -> MessageStore:
        store = MessageStore(url, **{"reactor": reactor, **options})
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
def open_postgres_store(postgres_url):
    """Starts MessageStores on a PostgreSQL database: for what only PostgreSQL does (several nodes)."""
    open_, stop_all = _store_opener(postgres_url)
    yield open_
    stop_all()


@pytest.fixture
def open_sqlite_store(sqlite_url):
    """Starts MessageStores on a SQLite database: for what only SQLite does (inline commits, the WAL)."""
    open_, stop_all = _store_opener(sqlite_url)
    yield open_
    stop_all()


@pytest.fixture
def store(open_sqlite_store):
    """A started MessageStore on a fresh SQLite file (global reactor); stopped after the test."""
    return open_sqlite_store()
