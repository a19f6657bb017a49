"""engine.store.db: engines and their durability settings."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from engine.errors import StoreError
from engine.store.db import create_engine_for


@pytest.mark.parametrize(("durability", "synchronous"), [("process", 1), ("power_loss", 2)])
def test_sqlite_pragmas_follow_durability(sqlite_url, durability, synchronous):
    """SQLite runs in WAL mode, synchronous NORMAL/FULL, busy_timeout, foreign keys, temp files in memory."""
    engine = create_engine_for(sqlite_url, durability=durability, lock_timeout=0.25)
    with engine.connect() as connection:
        pragmas = {
            p: connection.exec_driver_sql(f"PRAGMA {p}").scalar_one()
            for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "temp_store")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": synchronous,
        "busy_timeout": 250,
        "foreign_keys": 1,
        "temp_store": 2,
    }
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(("durability", "synchronous_commit"), [("process", "off"), ("power_loss", "on")])
def test_postgresql_settings_follow_durability(postgres_url, durability, synchronous_commit):
    """PostgreSQL sessions get synchronous_commit off/on, the lock timeout and UTC."""
    engine = create_engine_for(postgres_url, durability=durability, lock_timeout=0.25)
    with engine.connect() as connection:
        settings = {
            s: connection.exec_driver_sql(f"SHOW {s}").scalar_one()
            for s in ("synchronous_commit", "lock_timeout", "TimeZone")
        }
    assert settings == {"synchronous_commit": synchronous_commit, "lock_timeout": "250ms", "TimeZone": "UTC"}
    engine.dispose()


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(postgres_url):
    """A postgresql:// URL is served by psycopg 3."""
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    engine = create_engine_for(plain)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    engine.dispose()


def test_sqlite_parent_directory_is_created(tmp_path):
    """The directories of a SQLite file are created on first connect."""
    path = tmp_path / "a" / "b" / "store.db"
    engine = create_engine_for(f"sqlite:///{path}")
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    engine.dispose()
    assert path.exists()


@pytest.mark.parametrize("url", ["mysql://localhost/x", "sqlite://", "sqlite:///:memory:"])
def test_unusable_urls_are_refused(url):
    """Only file SQLite and PostgreSQL URLs make a store engine."""
    with pytest.raises(StoreError):
        create_engine_for(url)


@pytest.mark.parametrize("options", [{"durability": "sometimes"}, {"lock_timeout": 0}])
def test_bad_settings_are_refused(sqlite_url, options):
    """An unknown durability or a lock timeout that is not positive is a ValueError."""
    with pytest.raises(ValueError):
        create_engine_for(sqlite_url, **options)
