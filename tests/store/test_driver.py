"""engine.store.driver: text fitting, driver errors as StoreError, statement forms on both backends."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from engine.errors import StoreError
from engine.store.db import create_engine_for
from engine.store.driver import (
    VALUES_MAX_PARAMETERS,
    Children,
    InsertReturningIds,
    Rows,
    Select,
    TableCursor,
    Tables,
    binds,
    by_id,
    checkpoint_wal,
    fit_row,
    fit_text,
    is_lock_error,
    set_pragmas,
    store_errors,
)
from engine.store.schema import RowId, UTCDateTime

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

# Tables of the driver's own, beside the store's: the driver knows no table of the store.
_metadata = sa.MetaData()
items = sa.Table(
    "driver_items",
    _metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(8), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=True),
)
parts = sa.Table(
    "driver_parts",
    _metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("item_id", RowId, sa.ForeignKey("driver_items.id"), nullable=False),
    sa.Column("label", sa.Text(), nullable=False),
)


@pytest.fixture
def tables(engine) -> sa.Engine:
    """The store's engine with the driver's test tables created."""
    _metadata.create_all(engine)
    return engine


def _items(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(items).order_by(items.c.id))]


# Text fitting: the one function


def test_fit_text_returns_text_that_fits_as_it_is():
    """ASCII text without NULs that fits comes back as it is (the very object); None allows any length."""
    text = "LAB^NORTH"
    assert fit_text(text, 9) is text and fit_text(text, None) is text
    assert fit_text("é中😀", 3) == "é中😀"


def test_fit_text_drops_nuls_replaces_lone_surrogates_and_cuts():
    """NULs go, undecodable bytes (lone surrogates) become "?", and the text is cut to its length."""
    assert fit_text("a\x00b\x00c", None) == "abc"
    assert fit_text("L\udce9B", None) == "L?B"
    assert fit_text("\x00" + "9" * 300, 199) == "9" * 199
    assert fit_text("é\udcff\x00é" * 3, 4) == "é?éé"


def test_fit_row_fits_the_text_columns_of_its_table_only():
    """fit_row fits each text of a text column of the table; other values stay as given, in a new dict."""
    values = {"name": "x\x00" + "y" * 20, "count": 3, "at": None, "other": "z" * 20}
    fitted = fit_row(items, values)
    assert fitted == {"name": "xyyyyyyy", "count": 3, "at": None, "other": "z" * 20}
    assert values["name"] == "x\x00" + "y" * 20


# Driver errors as StoreError


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
    assert _items(tables) == []


def test_errors_that_are_no_database_error_pass_through():
    """store_errors turns only SQLAlchemy's errors into StoreError."""
    with pytest.raises(ValueError):
        with store_errors("anything"):
            raise ValueError("a caller's bug")


# Rows and Select: many rows in one call, compiled once per dialect


@pytest.mark.parametrize("count", [1, 2, 3, 130, 300])
def test_rows_insert_keeps_the_order_given_and_every_value(tables, count):
    """An INSERT of any number of rows (SQLite: runs of a power of two; PostgreSQL: arrays) keeps order."""
    insert = Rows(sa.insert(items).values(binds(items, "name", "at", "count")))
    local = timezone(timedelta(hours=-5))
    rows = [
        {"name": f"n{n}", "at": None if n % 3 else (T0 + timedelta(minutes=n)).astimezone(local), "count": n}
        for n in range(count)
    ]
    with tables.begin() as connection:
        insert.run(connection, rows)
    stored = _items(tables)
    assert [(name, at, n) for _, name, at, n, _ in stored] == [
        (row["name"], row["at"], row["count"]) for row in rows
    ]
    assert [row[0] for row in stored] == sorted(row[0] for row in stored)
    assert all(at is None or at.utcoffset() == timedelta(0) for _, _, at, _, _ in stored)


@pytest.mark.parametrize("count", [1, 2, 5, 129])
def test_rows_update_by_id_changes_exactly_the_rows_given(tables, count):
    """An UPDATE by id of many rows (VALUES list, arrays) writes each row's values and the statement's."""
    with tables.begin() as connection:
        connection.execute(sa.insert(items), [{"name": f"n{n}", "count": n} for n in range(count + 1)])
    ids = [row[0] for row in _items(tables)]
    update = Rows(by_id(items).values(count=items.c.count + 10, **binds(items, "name", "seen_at")))
    with tables.begin() as connection:
        update.run(connection, [{"id": i, "name": f"u{i}", "seen_at": T0} for i in ids[:count]])
    assert [(name, n, seen_at) for _, name, _, n, seen_at in _items(tables)] == [
        (f"u{i}", n + 10, T0) for n, i in enumerate(ids[:count])
    ] + [(f"n{count}", count, None)]


def test_rows_update_of_one_id_twice_applies_both(tables):
    """Two rows for one id in one call both apply, in order (row by row: one statement updates it once)."""
    with tables.begin() as connection:
        connection.execute(sa.insert(items), [{"name": "a", "count": 0}, {"name": "b", "count": 0}])
    first, second = (row[0] for row in _items(tables))
    update = Rows(by_id(items).values(count=items.c.count + 1, **binds(items, "name")))
    with tables.begin() as connection:
        update.run(
            connection, [{"id": first, "name": "x"}, {"id": second, "name": "y"}, {"id": first, "name": "z"}]
        )
    assert [(name, n) for _, name, _, n, _ in _items(tables)] == [("z", 2), ("y", 1)]


@pytest.mark.parametrize("wanted", [1, 3, 5, 8])
def test_select_reads_an_in_list_of_any_length_as_tuples(tables, wanted):
    """A listed key takes any number of values (padded to a power of two); times are read as aware UTC."""
    with tables.begin() as connection:
        connection.execute(
            sa.insert(items),
            [{"name": f"n{n}", "count": n, "at": T0 + timedelta(hours=n)} for n in range(10)],
        )
    ids = [row[0] for row in _items(tables)]
    select = Select(
        sa.select(items.c.id, items.c.at)
        .where(items.c.id.in_(sa.bindparam("b_ids", type_=items.c.id.type, expanding=True)))
        .order_by(items.c.id),
        listed="ids",
    )
    with tables.connect() as connection:
        rows = select.rows(connection, {"ids": ids[::2][:wanted]})
    assert rows == [(i, T0 + timedelta(hours=n)) for n, i in list(enumerate(ids))[::2][:wanted]]
    with pytest.raises(ValueError), tables.connect() as connection:
        select.rows(connection, {"ids": []})


# InsertReturningIds: the intake's insert


def _insert(engine: sa.Engine) -> InsertReturningIds:
    return InsertReturningIds(
        items,
        ("name", "at", "count"),
        engine.dialect,
        copies={"seen_at": "at"},
        children=(Children("p", parts, "item_id", ("label",)),),
    )


@pytest.mark.parametrize("count", [1, 4, 203])
def test_insert_returning_ids_in_a_transaction_gives_ids_in_order(tables, count):
    """run() in a transaction gives the ids in order; text is fitted; a copy holds its source's value."""
    insert = _insert(tables)
    rows = [insert.values((f"n{n}\x00" + "x" * 10, T0 + timedelta(seconds=n), n)) for n in range(count)]
    with tables.connect() as connection, connection.begin():
        ids = insert.run(connection, rows)
    stored = _items(tables)
    assert ids == [row[0] for row in stored] and ids == sorted(ids)
    assert [(name, at, n, seen) for _, name, at, n, seen in stored] == [
        ((f"n{n}" + "x" * 10)[:8], T0 + timedelta(seconds=n), n, T0 + timedelta(seconds=n))
        for n in range(count)
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("count", [1, 8, 900], ids=["one", "scalar parameters", "arrays"])
def test_insert_returning_ids_alone_links_children_by_position(postgres_url, count):
    """PostgreSQL: run_alone commits rows and children in one statement; a child names its row by position."""
    engine = create_engine_for(postgres_url)
    _metadata.create_all(engine)
    insert = _insert(engine)
    rows = [insert.values((f"n{n}", T0, n)) for n in range(count)]
    children = [{"item_id": position, "label": f"of {position}"} for position in range(count, 0, -1)]
    assert (len(rows) * 4 + len(children) * 2 > VALUES_MAX_PARAMETERS) == (count == 900)
    try:
        with engine.connect() as connection:
            ids = insert.run_alone(connection, rows, [children])
            plain = insert.run_alone(connection, [insert.values(("alone", None, 0))])
        with engine.connect() as connection:
            linked = connection.execute(sa.select(parts.c.item_id, parts.c.label).order_by(parts.c.id)).all()
    finally:
        engine.dispose()
    assert ids == sorted(ids) and len(ids) == count and plain[0] > ids[-1]
    assert [tuple(row) for row in linked] == [
        (ids[position - 1], f"of {position}") for position in range(count, 0, -1)
    ]


# Tables and TableCursor: single-table statements with rows as dicts


_KEEP = object()


def test_table_statements_round_trip(tables):
    """insert, insert_many, select by key (=, <>, IS NULL), update, parents and delete round trip."""
    driver = Tables(tables.dialect, null=_KEEP)
    with tables.begin() as connection:
        cursor = TableCursor(connection, driver)
        first = cursor.insert(items, {"name": "first\x00 of all", "at": T0, "count": 1, "seen_at": _KEEP})
        cursor.insert_many(
            items,
            [{"name": f"n{n}", "at": None, "count": n} for n in range(2, 5)] + [{"name": "last", "count": 9}],
        )
        one = cursor.select(
            items, [((("id", "="),), {"id": first})], order=("id",), descending=False, limit=None
        )
        assert one == [{"id": first, "name": "first of", "at": T0, "count": 1, "seen_at": None}]
        keyed = cursor.select(
            items,
            [((("at", "null"), ("count", "<>")), {"count": 3}), ((("name", "="),), {"name": "first of all"})],
            order=("count",),
            descending=True,
            limit=None,
        )
        assert [row["name"] for row in keyed] == ["last", "n4", "n2", "first of"]
        cursor.update(items, {"count": 7, "seen_at": T0}, first)
        cursor.insert_many(parts, [{"item_id": first, "label": "a"}, {"item_id": first, "label": "b"}])
        found = cursor.parents(parts, items, "item_id", ("label",), [("b",), ("a",), ("c",)])
        assert [(label, row["id"], row["count"], row["seen_at"]) for label, row in found] == [
            ("a", first, 7, T0),
            ("b", first, 7, T0),
        ]
        cursor.delete(parts, (("label", "="),), {"label": "a"})
        cursor.delete(items, (("count", "<>"),), {"count": 7})
    assert [(name, n) for _, name, _, n, _ in _items(tables)] == [("first of", 7)]


def test_table_selects_of_many_keys_answer_for_each(tables):
    """More keys than one select takes (SQLite refuses a deep OR) still find every row."""
    driver = Tables(tables.dialect)
    with tables.begin() as connection:
        cursor = TableCursor(connection, driver)
        cursor.insert_many(items, [{"name": f"n{n}", "count": n} for n in range(250)])
        found = cursor.select(
            items,
            [((("count", "="),), {"count": n}) for n in range(250)],
            order=("id",),
            descending=False,
            limit=None,
        )
    assert [row["count"] for row in found] == list(range(250))


# Statements outside any transaction (SQLite)


def test_pragmas_and_checkpoints_run_on_the_driver(sqlite_url):
    """set_pragmas sets each setting on the connection; checkpoint_wal copies the WAL into the file."""
    engine = create_engine_for(sqlite_url)
    database = Path(sa.engine.make_url(sqlite_url).database)
    _metadata.create_all(engine)
    try:
        with engine.connect() as connection:
            set_pragmas(connection, busy_timeout=0, wal_autocheckpoint=0)
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            connection.rollback()
            with connection.begin():
                connection.execute(sa.insert(items), [{"name": "x", "count": n} for n in range(2000)])
            before = database.stat().st_size
            checkpoint_wal(connection)
            assert database.stat().st_size > before
    finally:
        engine.dispose()
