"""The store's one raw-SQL layer: the only code that touches DBAPI cursors or builds SQL text.

SQLAlchemy's per-statement and per-row work (compiling, a bind processor call per value, a Row
per result row) cost more than the statements of the hot paths themselves, so those go to the
driver here, with the values SQLAlchemy would send (its own bind and result processors) and its
errors (``as_sqlalchemy_error``, then ``store_errors``). Everything else uses SQLAlchemy Core.

Import from ``engine.store.driver``: a name is imported from its module when first asked for
(``__getattr__``), so that ``sqlite_reads`` is imported without the others, which import
SQLAlchemy. Its modules are:

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
- ``sqlite_reads``: ``SQLiteReads``, the reads of read-only commands on a SQLite store with the
  stdlib's sqlite3 (no SQLAlchemy: ``sqlite_path`` says which URLs it opens), and ``fts5_match``;
  ``record_reads``: ``RecordRows``, the patient record's rows it reads for ``patient find`` and
  ``show``; ``sqlite_values``: the stored timestamps both read and write.
- ``record_attach``: the patient record's own SQLite file beside the store's (``record_file``),
  attached as schema ``record`` (``attach_record``), and the move of its tables there (migration 0025).
- ``space``: SQLite's file space (``file_space``, ``incremental_vacuum``, ``vacuum_to_incremental``,
  PostgreSQL's ``vacuum_postgresql``), ``repack_rows`` (rows that shrank, into fewer pages)
  and its online copy (``backup_sqlite``, ``integrity_problems``).
"""

from __future__ import annotations

import importlib

#: Where each name of the package is defined.
_HOMES = {
    "AUTO_VACUUM_INCREMENTAL": "space",
    "Children": "insert",
    "RecordRows": "record_reads",
    "ContentIndex": "search",
    "FileSpace": "space",
    "INDEX_TABLES": "search",
    "InsertReturningIds": "insert",
    "Rows": "rows",
    "SQLiteReads": "sqlite_reads",
    "Select": "rows",
    "Table": "tables",
    "TableCursor": "tables",
    "Tables": "tables",
    "VALUES_MAX_PARAMETERS": "insert",
    "backup_sqlite": "space",
    "binds": "rows",
    "by_id": "rows",
    "checkpoint_wal": "connection",
    "describe": "errors",
    "file_space": "space",
    "fit_row": "text",
    "fit_text": "text",
    "foreign_keys_off": "space",
    "fts5_match": "sqlite_reads",
    "incremental_vacuum": "space",
    "integrity_problems": "space",
    "is_lock_error": "errors",
    "repack_rows": "space",
    "set_pragmas": "connection",
    "sqlite_path": "sqlite_reads",
    "store_errors": "errors",
    "vacuum_postgresql": "space",
    "vacuum_to_incremental": "space",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
