"""engine.store.driver.forms: many-row forms of a statement as SQL text (test_rows, test_insert run them)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.driver.forms import (
    EXACT_RUNS,
    arrays_sql,
    column_type,
    insert_select,
    sqlite_insert_many,
    sqlite_runs,
    sqlite_update_many,
    unnest_rows,
    values_list,
)
from tests.fakes.driver import items

POSTGRESQL = postgresql.psycopg.dialect()


@pytest.mark.parametrize("most", [1, 2, 128])
def test_sqlite_runs_cover_every_row_once_in_powers_of_two(most):
    """The runs follow each other from row 0 to the last; each is at most ``most``, and a power of two
    unless it is all of at most EXACT_RUNS rows."""
    for total in range(0, 600):
        runs = list(sqlite_runs(total, most))
        assert [start for start, _ in runs] == [sum(count for _, count in runs[:i]) for i in range(len(runs))]
        assert sum(count for _, count in runs) == total
        assert all(count <= most for _, count in runs)
        if total > min(EXACT_RUNS, most):
            assert all(count & (count - 1) == 0 for _, count in runs)


def test_sqlite_runs_take_a_few_rows_in_one_run():
    """3 rows (a message's deliveries for three destinations) go as one run, not as 2 and 1."""
    assert list(sqlite_runs(3)) == [(0, 3)]
    assert list(sqlite_runs(EXACT_RUNS)) == [(0, EXACT_RUNS)]
    assert list(sqlite_runs(0)) == []


def test_sqlite_runs_take_the_largest_run_first():
    """300 rows go as 128, 128, 32, 8 and 4: few statement shapes, few statements."""
    assert list(sqlite_runs(300)) == [(0, 128), (128, 128), (256, 32), (288, 8), (296, 4)]


def test_sqlite_insert_many_repeats_the_row_of_values():
    """A one-row INSERT becomes one INSERT of ``count`` rows."""
    assert (
        sqlite_insert_many("INSERT INTO t (a, b) VALUES (?, ?)", 3)
        == "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)"
    )


def test_sqlite_update_many_reads_each_row_from_a_values_list():
    """An UPDATE by id of many rows reads them from VALUES; a bind without a key stays one, after the rows."""
    fields = (("a", None, None), (None, None, None), ("id", None, None))
    sql = sqlite_update_many("UPDATE t SET a=?, n=n + ? WHERE t.id = ?", fields, 2, sqlite.dialect())
    assert (
        sql == "WITH v(a, id) AS (VALUES (?, ?), (?, ?)) UPDATE t SET a=v.a, n=n + ? FROM v WHERE t.id = v.id"
    )
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, n INTEGER)")
    database.executemany("INSERT INTO t VALUES (?, ?, 0)", [(1, "x"), (2, "y"), (3, "z")])
    database.execute(sql, ("three", 3, "one", 1, 10))
    assert database.execute("SELECT id, a, n FROM t ORDER BY id").fetchall() == [
        (1, "one", 10),
        (2, "y", 0),
        (3, "three", 10),
    ]


@pytest.mark.parametrize(
    ("sql", "fields"),
    [
        ("UPDATE t SET a=?", (("a", None, None),)),
        ("UPDATE t SET a=? WHERE t.id = ?", (("a", None, None),)),
    ],
    ids=["no WHERE", "binds and fields disagree"],
)
def test_sqlite_update_many_refuses_what_is_no_update_by_id(sql, fields):
    """An UPDATE without WHERE, or whose ? do not match the fields, is a ValueError, not a wrong statement."""
    with pytest.raises(ValueError, match="not an UPDATE by id"):
        sqlite_update_many(sql, fields, 2, sqlite.dialect())


def test_a_column_type_has_no_length():
    """PostgreSQL casts go to the type without its length: fitted values are never cut by a cast."""
    assert [column_type(items.c[name], POSTGRESQL) for name in ("id", "name", "at", "count")] == [
        "BIGINT",
        "VARCHAR",
        "TIMESTAMP WITH TIME ZONE",
        "INTEGER",
    ]


def test_unnest_rows_reads_one_array_a_column_in_order():
    """Arrays are binary binds cast to their columns' types; ``i`` orders, ``k`` gives positions."""
    assert (
        unnest_rows(items, ["name", "count"], POSTGRESQL)
        == "unnest(%b::VARCHAR[], %b::INTEGER[]) WITH ORDINALITY AS v(name, count, i)"
    )
    assert unnest_rows(items, ["name", "count"], POSTGRESQL, named=True, positions=True) == (
        "unnest(%b::int[], %(b_name)b::VARCHAR[], %(b_count)b::INTEGER[])"
        " WITH ORDINALITY AS v(k, name, count, i)"
    )


def test_values_list_numbers_its_placeholders_from_those_given():
    """Each row's placeholders continue the numbering, each cast to its column's type; ``i`` is the row."""
    numbers = iter(range(1, 100))
    assert (
        values_list(items, ["name", "count"], POSTGRESQL, 2, numbers)
        == "(VALUES ($1::VARCHAR, $2::INTEGER, 1), ($3::VARCHAR, $4::INTEGER, 2)) AS v(name, count, i)"
    )
    assert (
        values_list(items, ["name"], POSTGRESQL, 2, numbers, positions=True)
        == "(VALUES ($5::int, $6::VARCHAR, 1), ($7::int, $8::VARCHAR, 2)) AS v(k, name, i)"
    )


def test_insert_select_fills_the_first_columns_with_the_values_given():
    """Given values fill the first columns; the rest come from ``v``."""
    assert (
        insert_select(items, ["id", "name", "count"], POSTGRESQL, ["7"])
        == "INSERT INTO driver_items (id, name, count) SELECT 7, v.name, v.count"
    )


def _compiled(statement: sa.UpdateBase) -> str:
    return str(statement.compile(dialect=POSTGRESQL))


def test_arrays_sql_turns_one_row_into_all_rows_from_arrays():
    """An INSERT selects from the arrays in their order (no RETURNING); an UPDATE by id joins them."""
    insert = sa.insert(items).values(name=sa.bindparam("b_name"), count=sa.bindparam("b_count"))
    assert arrays_sql(insert, _compiled(insert), ["b_name", "b_count"], POSTGRESQL) == (
        "INSERT INTO driver_items (name, count) SELECT v.name::VARCHAR, v.count::INTEGER"
        " FROM unnest(%(b_name)b::VARCHAR[], %(b_count)b::INTEGER[]) WITH ORDINALITY AS v(name, count, i)"
        " ORDER BY v.i"
    )
    update = (
        sa.update(items)
        .where(items.c.id == sa.bindparam("b_id"))
        .values(count=items.c.count + 1, name=sa.bindparam("b_name"))
    )
    assert arrays_sql(update, _compiled(update), ["b_id", "b_name"], POSTGRESQL) == (
        "UPDATE driver_items SET name=v.name::VARCHAR, count=(driver_items.count + %(count_1)s::INTEGER)"
        " FROM unnest(%(b_id)b::BIGINT[], %(b_name)b::VARCHAR[]) WITH ORDINALITY AS v(id, name, i)"
        " WHERE driver_items.id = v.id::BIGINT"
    )


def test_arrays_sql_refuses_an_update_that_is_not_by_id():
    """An UPDATE without WHERE cannot read its rows from arrays: a ValueError, not an update of every row."""
    update = sa.update(items).values(name=sa.bindparam("b_name"))
    with pytest.raises(ValueError, match="not an UPDATE by id"):
        arrays_sql(update, _compiled(update), ["b_name"], POSTGRESQL)
