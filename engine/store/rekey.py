"""Rekey: seal again, with the current key, every stored value sealed with another key or still clear.

Runs beside a running engine (``hl7engine rekey``): each sealed column (``Column.info[SEALED]``
of every table on the store's metadata, the record's included once imported), and each search
key column (``BLIND``: a clear key becomes its keyed hash), is read in id
order, a bounded batch at a time, and each batch is written in one short transaction. Then the
content index (engine.store.driver.search), which holds words of the content in clear, is
emptied: with encryption there is none. A row is
only changed if it still holds what was read (compare and set), so a value the engine rewrote
meanwhile is never overwritten with an older one. Once rekey has run, the old keys can be removed
from the configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from engine.errors import StoreError
from engine.store.cipher import BLIND, BLIND_PREFIX, SEALED, Cipher, cipher_of
from engine.store.driver import ContentIndex, set_pragmas, store_errors
from engine.store.schema import metadata

__all__ = ["rekey", "sealed_columns"]


def sealed_columns() -> Iterator[sa.Column]:
    """Every sealed or search key column of the tables on the store's metadata, table by table."""
    for table in metadata.sorted_tables:
        for column in table.c:
            if column.info.get(SEALED) or column.info.get(BLIND):
                yield column


def rekey(
    engine: sa.Engine,
    *,
    batch: int = 500,
    pause: float = 0.0,
    on_batch: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Seal every value not sealed with the current key anew; how many changed, by ``table.column``.

    At most ``batch`` rows are read and written at a time, ``pause`` seconds apart (to leave the
    database to the engine). ``on_batch(column, changed)`` is told after each batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    cipher = cipher_of(engine)
    if not cipher.sealing:
        raise StoreError("rekey needs encryption configured (engine.store.encryption)")
    changed: dict[str, int] = {}
    with store_errors("rekeying stored content"), engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # What an UPDATE replaces is overwritten with zeros, not left in free pages of the file.
            set_pragmas(connection, secure_delete="ON")
        for column in sealed_columns():
            name = f"{column.table.name}.{column.name}"
            changed[name] = 0
            after = None
            while True:
                rows, after = _read(connection, column, after, batch)
                if not rows:
                    break
                count = _reseal(connection, column, cipher, rows)
                changed[name] += count
                if on_batch is not None:
                    on_batch(name, count)
                if pause:
                    time.sleep(pause)
        # The content index holds messages' words in clear: a sealed store keeps none (it is off).
        # TRANSACTION: every index row, removed at once.
        with connection.begin():
            changed["message_text.terms"] = ContentIndex(connection.dialect).clear(connection)
    return changed


def _read(connection: sa.Connection, column: sa.Column, after, batch: int) -> tuple[list, object]:
    """The next ``batch`` rows (key, value) of the column with a value, past ``after``; the last key."""
    key = column.table.primary_key.columns.values()[0]
    statement = sa.select(key, column).where(column.is_not(None)).order_by(key).limit(batch)
    if after is not None:
        statement = statement.where(key > after)
    rows = connection.execute(statement).all()
    connection.rollback()  # read outside the write: on SQLite a read transaction cannot become one
    return rows, (rows[-1][0] if rows else after)


def _renewal(column: sa.Column, cipher: Cipher) -> Callable[[bytes | str], bytes | str | None]:
    """The column's value as the current key would store it; None when it already is."""
    if column.info.get(BLIND):
        return lambda value: None if value.startswith(BLIND_PREFIX) else cipher.blind(value)
    text = not isinstance(column.type, sa.LargeBinary)

    def renewed(value: bytes | str) -> bytes | str | None:
        if cipher.key_of(value) == cipher.current:
            return None
        return cipher.seal_text(cipher.open_text(value)) if text else cipher.seal(cipher.open(value))

    return renewed


def _reseal(connection: sa.Connection, column: sa.Column, cipher: Cipher, rows: list) -> int:
    """Write the rows' values sealed with the current key where another key (or none) sealed them."""
    renewed = _renewal(column, cipher)
    changes = [
        {"b_key": key, "b_old": value, "b_new": new}
        for key, value in rows
        if (new := renewed(value)) is not None and new != value
    ]
    if not changes:
        return 0
    table = column.table
    key = table.primary_key.columns.values()[0]
    update = (
        sa.update(table)
        .where(key == sa.bindparam("b_key"), column == sa.bindparam("b_old", type_=column.type))
        .values({column.name: sa.bindparam("b_new", type_=column.type)})
    )
    # TRANSACTION: one batch of one column resealed; a row the engine changed meanwhile is left alone.
    with connection.begin():
        connection.execute(update, changes)
    return len(changes)
