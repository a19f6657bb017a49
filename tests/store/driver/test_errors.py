"""engine.store.driver.errors: driver errors as StoreError, locked or transient as the database failed."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from engine.errors import StoreError
from engine.store.db import create_engine_for
from engine.store.driver import Rows, binds, describe, is_lock_error, store_errors
from tests.fakes.driver import item_rows, items


def test_lock_errors_are_recognised(tmp_path):
    """SQLite "database is locked" counts as a lock error, other database errors do not."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine_for(f"sqlite:///{path}", lock_timeout=0.05)
    with pytest.raises(StoreError) as locked:
        with store_errors("writing"), engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    holder.rollback()
    with pytest.raises(StoreError) as missing:
        with store_errors("reading"), engine.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")
    engine.dispose()
    assert locked.value.locked and is_lock_error(locked.value.__cause__)
    assert not missing.value.locked and isinstance(missing.value.__cause__, sa_exc.OperationalError)
    assert str(missing.value).startswith("reading failed: no such table")


def test_a_lock_timeout_is_locked_and_transient(engine, store_url, write_lock):
    """A lock held past lock_timeout, on either backend, is a StoreError both locked and transient."""
    engine = create_engine_for(store_url, lock_timeout=0.1)
    try:
        write_lock.hold()
        with pytest.raises(StoreError) as failed:
            with store_errors("writing"), engine.begin() as connection:
                connection.exec_driver_sql("DELETE FROM messages")
    finally:
        write_lock.release()
        engine.dispose()
    assert (failed.value.locked, failed.value.transient) == (True, True)
    assert str(failed.value).startswith("writing failed: ")


def test_an_unreachable_server_is_transient_but_not_locked():
    """A database that cannot be reached is transient (the same request may succeed later), not locked."""
    engine = create_engine_for("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(StoreError) as failed:
        with store_errors("connecting"), engine.connect():
            pass
    engine.dispose()
    assert (failed.value.locked, failed.value.transient) == (False, True)


def test_what_was_asked_failing_is_neither_transient_nor_locked(tables):
    """A row refused (NOT NULL) on the driver's own cursor is a StoreError neither transient nor locked."""
    insert = Rows(sa.insert(items).values(binds(items, "name", "count")))
    with pytest.raises(StoreError) as failed:
        with store_errors("inserting"), tables.begin() as connection:
            insert.run(connection, [{"name": "a", "count": 1}, {"name": "b", "count": None}])
    assert (failed.value.locked, failed.value.transient) == (False, False)
    assert isinstance(failed.value.__cause__, sa_exc.IntegrityError)
    assert item_rows(tables) == []


def test_errors_that_are_no_database_error_pass_through():
    """store_errors turns only SQLAlchemy's errors into StoreError."""
    with pytest.raises(ValueError):
        with store_errors("anything"):
            raise ValueError("a caller's bug")


def test_a_store_error_never_quotes_the_values_of_the_row(engine):
    """A refused row (PostgreSQL's DETAIL quotes it) or a Python error on a value: its text names neither."""
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE people (mrn VARCHAR(20) UNIQUE)")
        connection.exec_driver_sql("INSERT INTO people VALUES ('MRN-4711')")
    with pytest.raises(StoreError) as refused:
        with store_errors("writing"), engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO people VALUES ('MRN-4711')")
    assert str(refused.value).startswith("writing failed: ") and "MRN-4711" not in str(refused.value)
    try:
        "MRN-\udce9".encode("utf-8")
    except UnicodeEncodeError as error:
        assert describe(error) == "UnicodeEncodeError"
