"""Forms of one statement for many rows: SQLite's multi-row VALUES, PostgreSQL's arrays and VALUES lists.

Each takes a statement's SQL text (or a table and columns) and gives the text of the many-row
form; the values go to the driver as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import sqlalchemy as sa

# Up to this many rows go in one run whatever their number: a message processed at intake for
# three destinations has 3 deliveries rows, which went as runs of 2 and 1 (a statement more).
EXACT_RUNS = 8


def sqlite_runs(total: int, most: int = 128) -> Iterator[tuple[int, int]]:
    """(start, count) of the runs of rows a multi-row INSERT of ``total`` rows goes in on SQLite.

    Up to EXACT_RUNS rows (and ``most``) go in one run; more in runs of a power of two up to
    ``most``, so a few statements (sqlite3 keeps each prepared) serve every number of rows, and
    ``most`` rows of any table stay far below SQLite's 32,766 parameters.
    """
    if total <= min(EXACT_RUNS, most):
        if total:
            yield 0, total
        return
    start = 0
    while start < total:
        count = min(most, 1 << ((total - start).bit_length() - 1))
        yield start, count
        start += count


def sqlite_insert_many(sql: str, count: int) -> str:
    """SQLite: the one-row INSERT ``sql`` as an INSERT of ``count`` rows."""
    head, values, row = sql.rpartition(" VALUES ")
    return f"{head}{values}{', '.join([row] * count)}"


def sqlite_update_many(sql: str, fields: tuple, count: int, dialect: sa.Dialect) -> str:
    """SQLite: the one-row UPDATE by id ``sql`` as one UPDATE of ``count`` rows read from a VALUES list.

    ``sql`` has ``?`` binds, ``fields`` as prepare gives them.
    """
    quote = dialect.identifier_preparer.quote
    pieces = sql.split("?")
    if len(pieces) != len(fields) + 1 or " WHERE " not in sql:
        raise ValueError(f"not an UPDATE by id with one ? per bind: {sql}")
    text = pieces[0] + "".join(
        ("?" if key is None else f"v.{quote(key)}") + piece for (key, _, _), piece in zip(fields, pieces[1:])
    )
    keys = [quote(key) for key, _, _ in fields if key is not None]
    row = f"({', '.join(['?'] * len(keys))})"
    head, where, tail = text.partition(" WHERE ")
    return f"WITH v({', '.join(keys)}) AS (VALUES {', '.join([row] * count)}) {head} FROM v{where}{tail}"


def column_type(column: sa.Column, dialect: sa.Dialect) -> str:
    """PostgreSQL: the type of the column's values, without a length.

    Values are fitted already, and a cast to varchar(n) would cut.
    """
    return re.sub(r"[(][^)]*[)]$", "", column.type.compile(dialect=dialect))


def _typed_columns(
    table: sa.Table, columns: Sequence[str], dialect: sa.Dialect, positions: bool
) -> tuple[list[str], list[str]]:
    """PostgreSQL: each column's type (column_type) and quoted name; first ``int k`` with ``positions``."""
    quote = dialect.identifier_preparer.quote
    types = [column_type(table.c[name], dialect) for name in columns]
    names = [quote(name) for name in columns]
    if positions:
        types.insert(0, "int")
        names.insert(0, "k")
    return types, names


def unnest_rows(
    table: sa.Table,
    columns: Sequence[str],
    dialect: sa.Dialect,
    *,
    named: bool = False,
    positions: bool = False,
) -> str:
    """PostgreSQL: rows read from arrays, ``unnest(<one array a column>) WITH ORDINALITY AS v(<columns>, i)``.

    ``v.i`` is their order. The arrays are binds: positional ``%b``, or ``%(b_<column>)b`` when
    ``named``. With ``positions`` a first array (``v.k``) gives each row's position among the
    statement's messages. Arrays go to the server in binary: psycopg's text format escapes every
    element in Python, many times the cost (see docs/performance.md).
    """
    types, names = _typed_columns(table, columns, dialect, positions)
    binds = [*(["%b"] if positions else []), *(f"%(b_{name})b" if named else "%b" for name in columns)]
    arrays = [f"{bind}::{type_}[]" for bind, type_ in zip(binds, types)]
    return f"unnest({', '.join(arrays)}) WITH ORDINALITY AS v({', '.join(names)}, i)"


def values_list(
    table: sa.Table,
    columns: Sequence[str],
    dialect: sa.Dialect,
    count: int,
    numbers: Iterator[int],
    *,
    positions: bool = False,
) -> str:
    """PostgreSQL: ``count`` rows of placeholders, ``(VALUES ($1::type, ..., 1), ...) AS v(<columns>, i)``.

    Placeholders are numbered from ``numbers``; ``v.i`` is the rows' order. For a RawCursor
    (``$n`` placeholders). Each placeholder is cast to its column's type: a NULL or a text in a
    VALUES list has none. ``positions`` as for unnest_rows.
    """
    types, names = _typed_columns(table, columns, dialect, positions)
    rows = (
        f"({', '.join(f'${next(numbers)}::{type_}' for type_ in types)}, {i})" for i in range(1, count + 1)
    )
    return f"(VALUES {', '.join(rows)}) AS v({', '.join(names)}, i)"


def arrays_sql(statement: sa.UpdateBase, sql: str, names: list[str], dialect: sa.Dialect) -> str:
    """PostgreSQL: ``sql`` (one row's INSERT or UPDATE by id) as one statement of all rows, binds as arrays.

    ``sql``'s binds are ``%(b_<column>)s``:
    ``UPDATE t SET c = v.c ... FROM unnest(%(b_c)b::type[], ...) AS v(c, ...) WHERE t.id = v.id``;
    ``INSERT INTO t (...) SELECT v.c, ... FROM unnest(...) WITH ORDINALITY AS v(c, ..., i) ORDER BY v.i``.
    """
    quote = dialect.identifier_preparer.quote
    bound = [name[2:] for name in names if name.startswith("b_")]
    for column in bound:
        sql = sql.replace(f"%(b_{column})s", f"v.{quote(column)}")
    source = unnest_rows(statement.table, bound, dialect, named=True)
    sql = sql.partition(" RETURNING ")[0]  # nothing reads the ids of these rows
    if isinstance(statement, sa.Insert):
        head, _, row = sql.rpartition(" VALUES (")
        return f"{head} SELECT {row[:-1]} FROM {source} ORDER BY v.i"
    head, where, tail = sql.partition(" WHERE ")
    if not where or "%(b_" in sql:
        raise ValueError(f"not an UPDATE by id of bound values: {sql}")
    return f"{head} FROM {source}{where}{tail}"


def insert_select(
    table: sa.Table, columns: Sequence[str], dialect: sa.Dialect, values: Sequence[str] = ()
) -> str:
    """PostgreSQL: ``INSERT INTO <table> (<columns>) SELECT <values>, v.<column>, ...``.

    The given ``values`` fill the first columns, ``v`` the rest.
    """
    quote = dialect.identifier_preparer.quote
    picked = [*values, *(f"v.{quote(name)}" for name in columns[len(values) :])]
    return f"INSERT INTO {table.name} ({', '.join(map(quote, columns))}) SELECT {', '.join(picked)}"
