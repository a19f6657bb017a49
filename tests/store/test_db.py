"""engine.store.db: engines and their durability settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.errors import StoreError
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade


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
@pytest.mark.parametrize("durability", ["process", "power_loss"])
def test_postgresql_commits_are_synchronous_for_every_durability(postgres_url, durability):
    """PostgreSQL sessions get synchronous_commit on (commits survive a server crash), lock_timeout, UTC."""
    engine = create_engine_for(postgres_url, durability=durability, lock_timeout=0.25)
    with engine.connect() as connection:
        settings = {
            s: connection.exec_driver_sql(f"SHOW {s}").scalar_one()
            for s in ("synchronous_commit", "lock_timeout", "TimeZone")
        }
    assert settings == {"synchronous_commit": "on", "lock_timeout": "250ms", "TimeZone": "UTC"}
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


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_sqlite_store_is_readable_by_its_user_only(tmp_path):
    """Under a permissive umask the file, its -wal and -shm are 0600 and the folders created 0700."""
    tmp_path.chmod(0o755)
    path = tmp_path / "a" / "b" / "store.db"
    previous = os.umask(0o002)
    try:
        engine = create_engine_for(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            connection.exec_driver_sql("CREATE TABLE record.t (x)")
            modes = {p.name: _mode(p) for p in path.parent.iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    files = ("store.db", "store-record.db")
    assert modes == {f"{name}{end}": 0o600 for name in files for end in ("", "-wal", "-shm")}
    assert (_mode(tmp_path / "a"), _mode(tmp_path / "a" / "b"), _mode(tmp_path)) == (0o700, 0o700, 0o755)


def test_an_existing_sqlite_store_and_folder_keep_their_permissions(tmp_path):
    """What the engine did not create it leaves as the operator made it (a shared group folder, say)."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    path = folder / "store.db"
    path.touch()
    path.chmod(0o640)
    engine = create_engine_for(f"sqlite:///{path}")
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    engine.dispose()
    assert (_mode(folder), _mode(path)) == (0o750, 0o640)


@pytest.mark.parametrize("durability, synchronous", [("process", 1), ("power_loss", 2)])
def test_the_record_file_is_attached_beside_the_store_with_the_same_settings(
    sqlite_url, durability, synchronous
):
    """Every connection attaches <stem>-record<suffix> as schema record: WAL, same synchronous,
    incremental auto_vacuum and journal_size_limit."""
    engine = create_engine_for(sqlite_url, durability=durability, wal_max_bytes=3 * 1024 * 1024)
    with engine.connect() as connection:
        files = {row[1]: row[2] for row in connection.exec_driver_sql("PRAGMA database_list")}
        pragmas = [
            connection.exec_driver_sql(f"PRAGMA record.{name}").scalar_one()
            for name in ("journal_mode", "synchronous", "auto_vacuum", "journal_size_limit")
        ]
    engine.dispose()
    database = make_url(sqlite_url).database
    assert files == {"main": database, "record": database.replace("messages.db", "messages-record.db")}
    assert pragmas == ["wal", synchronous, 2, 3 * 1024 * 1024]


def test_a_record_transaction_holds_up_no_commit_of_messages(sqlite_url, make_message):
    """The record's write lock is its file's: while a transaction holds it (rows written, not
    committed), another connection commits received messages at once, and only a record write waits."""
    engine = create_engine_for(sqlite_url, lock_timeout=0.2)
    upgrade(engine)
    repository = MessageRepository(engine)
    with engine.connect() as record_writer:
        record_writer.begin()
        record_writer.exec_driver_sql("DELETE FROM record_applied_messages")  # takes the record's lock
        started = time.monotonic()
        [ids] = repository.insert_groups([((make_message(1),), None)])
        took = time.monotonic() - started
        with pytest.raises(sa.exc.OperationalError, match="locked"), engine.begin() as other:
            other.exec_driver_sql("DELETE FROM record_applied_messages")
        record_writer.rollback()
    engine.dispose()
    assert len(ids) == 1 and took < 0.2


def test_sqlite_journal_size_limit_is_wal_max_bytes(sqlite_url):
    """Every connection truncates the WAL to wal_max_bytes when it starts over."""
    engine = create_engine_for(sqlite_url, wal_max_bytes=3 * 1024 * 1024)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_size_limit").scalar_one() == 3 * 1024 * 1024
    engine.dispose()


@pytest.mark.parametrize("autocheckpoint, pages", [(True, 1000), (False, 0)])
def test_sqlite_connections_checkpoint_as_they_commit_unless_told_not_to(sqlite_url, autocheckpoint, pages):
    """SQLite's own checkpoint (1,000 pages) stays, but not on the store's engine (its writer does it)."""
    engine = create_engine_for(sqlite_url, autocheckpoint=autocheckpoint)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == pages
    engine.dispose()


@pytest.mark.parametrize("url", ["mysql://localhost/x", "sqlite://", "sqlite:///:memory:"])
def test_unusable_urls_are_refused(url):
    """Only file SQLite and PostgreSQL URLs make a store engine."""
    with pytest.raises(StoreError):
        create_engine_for(url)


@pytest.mark.parametrize("options", [{"durability": "sometimes"}, {"lock_timeout": 0}, {"wal_max_bytes": 0}])
def test_bad_settings_are_refused(sqlite_url, options):
    """An unknown durability, a lock timeout or WAL size that is not positive is a ValueError."""
    with pytest.raises(ValueError):
        create_engine_for(sqlite_url, **options)
