"""The index of messages' content terms: SQLite FTS5 or PostgreSQL full text, behind one object.

Neither is SQLAlchemy metadata (an FTS5 table is a virtual table, with shadow tables of its own),
so the index's tables are named here (``INDEX_TABLES``) and made by migration 0022:

- SQLite: ``message_text``, an FTS5 table (``unicode61`` tokenizer) whose rowid is the message id;
- PostgreSQL: ``message_text(message_id, terms tsvector)`` with a GIN index on ``terms``, its rows
  removed with their message.

A row holds a message's words (every message has one, empty for a pruned one): on SQLite
``engine.hl7.terms.indexed_text``, which FTS5 splits, on PostgreSQL ``search_terms``; a search
matches every term of the query at a term's start (``smi`` finds ``smith``). Triggers of the
migration drop a message's row when retention prunes its content, so a pruned message is found
no more by what it said.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import sqlalchemy as sa

from engine.store.driver.rows import Rows, binds
from engine.store.driver.sqlite_reads import fts5_match

__all__ = ["INDEX_TABLES", "ContentIndex"]

#: The index's tables (and SQLite's FTS5 shadow tables), which no metadata describes.
INDEX_TABLES = frozenset(
    {
        "message_text",
        *(f"message_text_{shadow}" for shadow in ("data", "idx", "content", "docsize", "config")),
    }
)

#: PostgreSQL: how many ids before the newest indexed one are looked at again (a transaction
#: that took an id may commit after later ones did; intake's commit within a second).
POSTGRESQL_LAG = 10_000
_index = sa.MetaData()
_SQLITE = sa.Table("message_text", _index, sa.Column("rowid", sa.Integer), sa.Column("terms", sa.Text))


@functools.cache
def _postgresql_table() -> sa.Table:
    """PostgreSQL's index table, made on first use: a SQLite store never imports the PostgreSQL dialect."""
    from sqlalchemy.dialects.postgresql import TSVECTOR

    return sa.Table(
        "message_text", sa.MetaData(), sa.Column("message_id", sa.BigInteger), sa.Column("terms", TSVECTOR)
    )


class ContentIndex:
    """Writes and searches the content index of one database dialect."""

    def __init__(self, dialect: sa.Dialect):
        self.sqlite = dialect.name == "sqlite"
        self._table = table = _SQLITE if self.sqlite else _postgresql_table()
        self._link = table.c[0].name
        self._insert = Rows(sa.insert(table).values(binds(table, self._link, "terms")))
        link = table.c[self._link]
        self._newest = sa.select(link).order_by(link.desc()).limit(1)  # FTS5 reads it from its end

    def rows(self, ids: Sequence[int], terms: Sequence[str]) -> list[dict]:
        """The index rows of messages ``ids`` with their terms (space-separated; '' for none)."""
        return [{self._link: i, "terms": text} for i, text in zip(ids, terms)]

    def pending(
        self, message_id: sa.ColumnElement, connection: sa.Connection, limit: int
    ) -> sa.ColumnElement[bool]:
        """A criterion on ``message_id``: the messages without an index row, of the next ``limit`` or so.

        SQLite commits ids in order (one writer), so they are those after the newest row. On
        PostgreSQL a smaller id may commit after a larger one: the last ``POSTGRESQL_LAG`` ids
        before the newest row are looked at again, those without a row included, up to the
        ``limit``-th id after it (a range of the primary key, whatever the planner thinks).
        """
        newest = connection.execute(self._newest).scalar() or 0
        if self.sqlite:
            return message_id > newest
        upper = connection.execute(
            sa.select(message_id).where(message_id > newest).order_by(message_id).offset(limit - 1).limit(1)
        ).scalar()
        indexed = sa.exists().where(self._table.c.message_id == message_id)
        window = [message_id > newest - POSTGRESQL_LAG, ~indexed]
        return sa.and_(*window, *([] if upper is None else [message_id <= upper]))

    def add(self, connection: sa.Connection, rows: Sequence[dict]) -> None:
        """Insert ``rows`` (from ``rows``) inside the connection's transaction."""
        if rows:
            self._insert.run(connection, rows)

    def clear(self, connection: sa.Connection) -> int:
        """Remove every row inside the connection's transaction; how many there were."""
        return connection.execute(sa.delete(self._table)).rowcount

    def newest_matching(
        self, statement: sa.Select, message_id: sa.ColumnElement, terms: Sequence[str]
    ) -> sa.Select:
        """``statement`` (of messages) narrowed to those whose terms match, newest (highest id) first.

        On SQLite the messages are read from the index's matches, newest first: a page of a word
        that thousands of messages hold stops at its last row instead of reading every match.
        """
        if not self.sqlite:
            return statement.where(self.matching(message_id, terms)).order_by(message_id.desc())
        index = sa.table("message_text", sa.column("rowid"))
        return (
            statement.join(index, index.c.rowid == message_id)
            .where(sa.text("message_text MATCH :match").bindparams(match=fts5_match(terms)))
            .order_by(index.c.rowid.desc())
        )

    def matching(self, message_id: sa.ColumnElement, terms: Sequence[str]) -> sa.ColumnElement[bool]:
        """A criterion on ``message_id``: the message's indexed terms start with every one of ``terms``.

        ``terms`` are engine.hl7.terms.query_terms (letters and digits only), at least one.
        """
        if self.sqlite:
            found = sa.text("SELECT rowid FROM message_text WHERE message_text MATCH :match").bindparams(
                match=fts5_match(terms)
            )
        else:
            if not terms:
                raise ValueError("a content search needs at least one term")
            found = sa.text(
                "SELECT message_id FROM message_text WHERE terms @@ to_tsquery('simple', :match)"
            ).bindparams(match=" & ".join(f"{term}:*" for term in terms))
        return message_id.in_(found.columns(sa.column("id", sa.BigInteger)).scalar_subquery())
