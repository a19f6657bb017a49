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
from alembic.util import CommandError

from engine.errors import StoreError
from engine.store.driver import store_errors

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any constant shared by every engine process: it names the advisory lock that serialises upgrades.
_POSTGRES_UPGRADE_LOCK = 0x686C37656E67  # "hl7eng"


def make_config(connection: sa.Connection) -> Config:
    """An Alembic Config for this package's scripts that migrates through ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest revision (``alembic upgrade head``); raises StoreError on failure."""
    try:
        with store_errors("migrating the store"):
            # TRANSACTION: every pending revision and the new alembic_version, all or nothing
            # (PostgreSQL has transactional DDL; SQLite too, as pysqlite no longer commits before DDL).
            with engine.begin() as connection:
                _wait_for_other_upgrades(connection)
                command.upgrade(make_config(connection), "head")
    except CommandError as error:
        raise StoreError(f"migrating the store failed: {error}") from error


def _wait_for_other_upgrades(connection: sa.Connection) -> None:
    """Hold a lock until commit so engines starting together upgrade one after the other."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_POSTGRES_UPGRADE_LOCK)))
    elif connection.dialect.name == "sqlite":
        # Takes the write lock now instead of at the first write, waiting up to busy_timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
