"""engine.store.migrations: Alembic revisions produce exactly engine.store.schema.metadata."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from engine.store.db import create_engine_for
from engine.store.migrations import SCRIPT_LOCATION, make_config, upgrade
from engine.store.schema import metadata


def _current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrated_schema_matches_metadata(store_url):
    """After upgrade head, Alembic autogenerate finds no difference from the metadata."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert differences == []


def test_upgrade_is_idempotent_and_reaches_head(store_url):
    """Upgrading twice is harmless and leaves the database at the newest revision."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as connection:
        head = ScriptDirectory.from_config(make_config(connection)).get_current_head()
    assert _current_revision(engine) == head == "0001"
    engine.dispose()


def test_concurrent_upgrades_wait_for_each_other(store_url):
    """Engines starting together on an empty database both succeed: one migrates, the other finds it done."""
    engines = [create_engine_for(store_url) for _ in range(3)]
    errors = []

    def run(engine):
        try:
            upgrade(engine)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert _current_revision(engines[0]) == "0001"
    for engine in engines:
        engine.dispose()


def test_scripts_ship_inside_the_package():
    """The revision scripts live in the package folder, so an installed engine can migrate."""
    assert (SCRIPT_LOCATION / "env.py").is_file()
    assert sorted(p.name for p in (SCRIPT_LOCATION / "versions").glob("*.py")) == ["0001_messages.py"]
