"""The store's one raw-SQL layer: the only code that touches DBAPI cursors or builds SQL text.

SQLAlchemy's per-statement and per-row work (compiling, a bind processor call per value, a Row
per result row) cost more than the statements of the hot paths themselves, so those go to the
driver here, with the values SQLAlchemy would send (its own bind and result processors) and its
errors (``as_sqlalchemy_error``, then ``store_errors``). Everything else uses SQLAlchemy Core.

Import from ``engine.store.driver``; its modules are:

- ``rows``: ``Rows`` (a DML statement for many rows in one call) and ``Select`` (a read as
  tuples), compiled once per dialect; ``binds`` and ``by_id`` build their statements.
- ``forms``: the many-row forms they and the intake insert use (SQLite multi-row VALUES,
  PostgreSQL arrays and VALUES lists).
- ``insert``: ``InsertReturningIds``, the intake's INSERT (with ``Children`` rows on PostgreSQL).
- ``tables``: ``Tables`` and ``TableCursor``, single-table statements with rows as dicts (the record's).
- ``search``: ``ContentIndex``, the index of messages' content terms (FTS5 or tsvector), and
  ``INDEX_TABLES``, its tables outside the metadata.
- ``text``: ``fit_text``, the one way text is fitted to a column, and ``fit_row``.
- ``errors``: ``store_errors``, ``is_lock_error`` and ``describe``: driver errors as StoreError, told
  without the values they carry.
- ``connection``: ``set_pragmas`` and ``checkpoint_wal`` (SQLite, outside any transaction).
- ``space``: SQLite's file space (``file_space``, ``incremental_vacuum``, ``vacuum_to_incremental``,
  PostgreSQL's ``vacuum_postgresql``), ``repack_rows`` (rows that shrank, into fewer pages)
  and its online copy (``backup_sqlite``, ``integrity_problems``).
"""

from engine.store.driver.connection import checkpoint_wal, set_pragmas
from engine.store.driver.errors import describe, is_lock_error, store_errors
from engine.store.driver.insert import VALUES_MAX_PARAMETERS, Children, InsertReturningIds
from engine.store.driver.rows import Rows, Select, binds, by_id
from engine.store.driver.search import INDEX_TABLES, ContentIndex
from engine.store.driver.space import (
    AUTO_VACUUM_INCREMENTAL,
    FileSpace,
    backup_sqlite,
    file_space,
    foreign_keys_off,
    incremental_vacuum,
    integrity_problems,
    repack_rows,
    vacuum_postgresql,
    vacuum_to_incremental,
)
from engine.store.driver.tables import Table, TableCursor, Tables
from engine.store.driver.text import fit_row, fit_text

__all__ = [
    "AUTO_VACUUM_INCREMENTAL",
    "INDEX_TABLES",
    "VALUES_MAX_PARAMETERS",
    "Children",
    "ContentIndex",
    "FileSpace",
    "InsertReturningIds",
    "Rows",
    "Select",
    "Table",
    "TableCursor",
    "Tables",
    "backup_sqlite",
    "binds",
    "by_id",
    "checkpoint_wal",
    "describe",
    "file_space",
    "foreign_keys_off",
    "fit_row",
    "fit_text",
    "incremental_vacuum",
    "integrity_problems",
    "is_lock_error",
    "repack_rows",
    "set_pragmas",
    "store_errors",
    "vacuum_postgresql",
    "vacuum_to_incremental",
]
