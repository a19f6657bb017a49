"""engine.store.driver.insert: InsertReturningIds, the intake's insert: ids in order, children by position."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from engine.store.db import create_engine_for
from engine.store.driver import VALUES_MAX_PARAMETERS, Children, InsertReturningIds
from tests.fakes.driver import item_rows, items, metadata, parts
from tests.fakes.messages import T0


def _part_rows(engine: sa.Engine) -> list[tuple]:
    """Every driver_parts row's item and label, in id order."""
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(sa.select(parts.c.item_id, parts.c.label).order_by(parts.c.id))
        ]


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
    """run() in a transaction gives the ids in order, its children name them; text fitted; copies."""
    insert = _insert(tables)
    rows = [insert.values((f"n{n}\x00" + "x" * 10, T0 + timedelta(seconds=n), n)) for n in range(count)]
    children = [(position, f"of {position}") for position in range(count, 0, -1)]
    with tables.connect() as connection, connection.begin():
        ids = insert.run(connection, rows, [children])
    stored = item_rows(tables)
    assert ids == [row[0] for row in stored] and ids == sorted(ids)
    assert _part_rows(tables) == [(ids[position - 1], label) for position, label in children]
    assert [(name, at, n, seen) for _, name, at, n, seen in stored] == [
        ((f"n{n}" + "x" * 10)[:8], T0 + timedelta(seconds=n), n, T0 + timedelta(seconds=n))
        for n in range(count)
    ]


def test_insert_committed_on_the_driver_commits_or_leaves_nothing(sqlite_url):
    """SQLite: run_committed commits what it inserts; a failing row leaves nothing and no open transaction."""
    engine = create_engine_for(sqlite_url)
    metadata.create_all(engine)
    insert = _insert(engine)
    try:
        with engine.connect() as connection:
            labels = [(3, "of 3"), (1, "of 1"), (3, "of 3 again")]
            ids = insert.run_committed(
                connection, [insert.values((f"n{n}", T0, n)) for n in range(3)], [labels]
            )
            broken = [insert.values(("ok", T0, 1)), insert.values(("no count", T0, None))]
            with pytest.raises(sa.exc.IntegrityError):
                insert.run_committed(connection, broken)
            assert not connection.connection.driver_connection.in_transaction
            with pytest.raises(sa.exc.IntegrityError):  # a child refused: its rows go too
                insert.run_committed(connection, [insert.values(("ok", T0, 1))], [[(1, None)]])
            assert not connection.connection.driver_connection.in_transaction
            after = insert.run_committed(connection, [insert.values(("after", None, 9))])
        stored = item_rows(engine)  # read on another connection: committed
        linked = _part_rows(engine)
    finally:
        engine.dispose()
    assert ids == [1, 2, 3] and after == [4]
    assert linked == [(3, "of 3"), (1, "of 1"), (3, "of 3 again")]
    assert [(name, n) for _, name, _, n, _ in stored] == [("n0", 0), ("n1", 1), ("n2", 2), ("after", 9)]


@pytest.mark.postgres
@pytest.mark.parametrize("count", [1, 8, 900], ids=["one", "scalar parameters", "arrays"])
def test_insert_returning_ids_alone_links_children_by_position(postgres_url, count):
    """PostgreSQL: run_alone commits rows and children in one statement; a child names its row by position."""
    engine = create_engine_for(postgres_url)
    metadata.create_all(engine)
    insert = _insert(engine)
    rows = [insert.values((f"n{n}", T0, n)) for n in range(count)]
    children = [(position, f"of {position}") for position in range(count, 0, -1)]
    assert (len(rows) * 4 + len(children) * 2 > VALUES_MAX_PARAMETERS) == (count == 900)
    try:
        with engine.connect() as connection:
            ids = insert.run_alone(connection, rows, [children])
            plain = insert.run_alone(connection, [insert.values(("alone", None, 0))])
        linked = _part_rows(engine)
    finally:
        engine.dispose()
    assert ids == sorted(ids) and len(ids) == count and plain[0] > ids[-1]
    assert linked == [(ids[position - 1], f"of {position}") for position in range(count, 0, -1)]
