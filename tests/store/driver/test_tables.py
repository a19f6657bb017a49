"""engine.store.driver.tables: Tables and TableCursor, single-table statements with rows as dicts."""

from __future__ import annotations

from engine.store.driver import TableCursor, Tables
from tests.fakes.driver import item_rows, items, parts
from tests.fakes.messages import T0

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
    assert [(name, n) for _, name, _, n, _ in item_rows(tables)] == [("first of", 7)]


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
