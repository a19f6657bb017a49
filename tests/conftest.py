"""Fixtures shared by every test package: throwaway SQLite and PostgreSQL databases, and a started store on SQLite."""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest
import pytest_twisted
from psycopg import sql
from twisted.internet import reactor

from engine.store.message_store import MessageStore

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


@pytest.fixture
def store(sqlite_url):
    """A started MessageStore on a fresh SQLite file (global reactor); stopped after the test."""
    message_store = MessageStore(sqlite_url, reactor=reactor)
    message_store.start()
    yield message_store
    pytest_twisted.blockon(message_store.stop())
