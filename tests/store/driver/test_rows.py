"""engine.store.driver.rows: Rows and Select, many rows in one call, compiled once per dialect."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa

from engine.store.driver import Rows, Select, binds, by_id
from tests.fakes.driver import item_rows, items
from tests.fakes.messages import T0


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
    stored = item_rows(tables)
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
    ids = [row[0] for row in item_rows(tables)]
    update = Rows(by_id(items).values(count=items.c.count + 10, **binds(items, "name", "seen_at")))
    with tables.begin() as connection:
        update.run(connection, [{"id": i, "name": f"u{i}", "seen_at": T0} for i in ids[:count]])
    assert [(name, n, seen_at) for _, name, _, n, seen_at in item_rows(tables)] == [
        (f"u{i}", n + 10, T0) for n, i in enumerate(ids[:count])
    ] + [(f"n{count}", count, None)]


def test_rows_update_of_one_id_twice_applies_both(tables):
    """Two rows for one id in one call both apply, in order (row by row: one statement updates it once)."""
    with tables.begin() as connection:
        connection.execute(sa.insert(items), [{"name": "a", "count": 0}, {"name": "b", "count": 0}])
    first, second = (row[0] for row in item_rows(tables))
    update = Rows(by_id(items).values(count=items.c.count + 1, **binds(items, "name")))
    with tables.begin() as connection:
        update.run(
            connection, [{"id": first, "name": "x"}, {"id": second, "name": "y"}, {"id": first, "name": "z"}]
        )
    assert [(name, n) for _, name, _, n, _ in item_rows(tables)] == [("z", 2), ("y", 1)]


@pytest.mark.parametrize("wanted", [1, 3, 5, 8])
def test_select_reads_an_in_list_of_any_length_as_tuples(tables, wanted):
    """A listed key takes any number of values (padded to a power of two); times are read as aware UTC."""
    with tables.begin() as connection:
        connection.execute(
            sa.insert(items),
            [{"name": f"n{n}", "count": n, "at": T0 + timedelta(hours=n)} for n in range(10)],
        )
    ids = [row[0] for row in item_rows(tables)]
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
