"""engine.record.schema and revision 0003: the migrated record tables are exactly the metadata's."""

from __future__ import annotations

from alembic import command

import engine.record.schema as record_schema
from engine.store.db import create_engine_for
from engine.store.migrations import make_config, upgrade
from engine.store.schema import metadata
from tests.fakes.store import schema_differences


def test_migrated_record_tables_match_metadata(store_url):
    """After upgrade head, autogenerate finds no difference in any record_* table."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    try:
        assert schema_differences(engine, tables="record_") == []
        assert set(record_schema.TABLES) <= set(metadata.tables)
    finally:
        engine.dispose()


def test_0003_downgrades_and_upgrades_again(store_url):
    """Downgrading below 0003 drops every record table; upgrading recreates them as the metadata says."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(make_config(connection), "0002")
    with engine.connect() as connection:
        left = [name for name in connection.dialect.get_table_names(connection) if name.startswith("record_")]
    assert left == []
    upgrade(engine)
    try:
        assert schema_differences(engine, tables="record_") == []
    finally:
        engine.dispose()
