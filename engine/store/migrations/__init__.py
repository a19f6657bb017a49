"""Alembic migrations of the store, run programmatically: no alembic.ini on disk.

Write a new revision by hand in ``versions/`` (the next number, ``down_revision`` the previous
one), or let Alembic draft it against an up-to-date database and then edit it::

    from alembic import command
    from engine.store.db import create_engine_for
    from engine.store.migrations import make_config

    with create_engine_for(url).begin() as connection:
        command.revision(make_config(connection), "what changes", rev_id="0002", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from engine.errors import StoreError
from engine.store.driver import store_errors
from engine.store.driver.record_attach import (
    MOVED_SUFFIX,
    RECORD_SCHEMA,
    attached,
    drop_tables,
    move_record_tables,
    record_tables,
)

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any constant shared by every engine process: it names the advisory lock that serialises upgrades.
_POSTGRES_UPGRADE_LOCK = 0x686C37656E67  # "hl7eng"
#: The revision that moves the record's tables into a file of their own (SQLite).
RECORD_FILE_REVISION = "0025"


def make_config(connection: sa.Connection) -> Config:
    """An Alembic Config for this package's scripts that migrates through ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest revision (``alembic upgrade head``); raises StoreError on failure.

    On SQLite the record's tables move to their own file at revision 0025 (see that revision): a
    store older than it is upgraded to it, the move finished, then upgraded to the head, so that
    later revisions find the record's tables in their file.
    """
    try:
        with store_errors("migrating the store"):
            if _before(engine, RECORD_FILE_REVISION):
                _upgrade_to(engine, RECORD_FILE_REVISION)
            _finish_record_move(engine)
            _upgrade_to(engine, "head")
    except CommandError as error:
        raise StoreError(f"migrating the store failed: {error}") from error


def _upgrade_to(engine: sa.Engine, revision: str) -> None:
    # TRANSACTION: every pending revision and the new alembic_version, all or nothing
    # (PostgreSQL has transactional DDL; SQLite too, as pysqlite no longer commits before DDL).
    with engine.begin() as connection:
        _wait_for_other_upgrades(connection)
        command.upgrade(make_config(connection), revision)


def _before(engine: sa.Engine, revision: str) -> bool:
    """Whether the database is at a revision older than ``revision`` (or has none)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        script = ScriptDirectory.from_config(make_config(connection))
    older = {
        None,
        *(script_revision.revision for script_revision in script.iterate_revisions(revision, "base")),
    }
    return current != revision and current in older


def _finish_record_move(engine: sa.Engine) -> None:
    """SQLite: copy the record's tables renamed by revision 0025 into its file, then drop them from main.

    Each step writes one file only, so each is atomic (a transaction over two WAL files is not):
    a crash between them leaves the renamed tables, which the next start copies again (they are
    the authority: what the record's file holds of them then is a copy left by such a crash).
    """
    with engine.connect() as connection:
        if not attached(connection) or not record_tables(connection, "main", suffix=MOVED_SUFFIX):
            return
    # TRANSACTION: the record's tables, indexes and rows in its file (main is only read).
    with engine.begin() as connection:
        _wait_for_other_upgrades(connection)
        if not record_tables(connection, "main", suffix=MOVED_SUFFIX):
            return  # another process finished it meanwhile
        move_record_tables(connection, "main", RECORD_SCHEMA, suffix=MOVED_SUFFIX)
    # TRANSACTION: main's renamed copies go, children first.
    with engine.begin() as connection:
        _wait_for_other_upgrades(connection)
        drop_tables(connection, "main", reversed(record_tables(connection, "main", suffix=MOVED_SUFFIX)))


def _wait_for_other_upgrades(connection: sa.Connection) -> None:
    """Hold a lock until commit so engines starting together upgrade one after the other."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_POSTGRES_UPGRADE_LOCK)))
    elif connection.dialect.name == "sqlite":
        # Takes the write lock now instead of at the first write, waiting up to busy_timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
