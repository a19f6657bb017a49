"""engine.record.schema and revision 0003: the migrated record tables are exactly the metadata's."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import engine.record.schema as record_schema
from engine.store.db import create_engine_for
from engine.store.migrations import make_config, upgrade
from engine.store.schema import metadata


def _record_differences(engine) -> list:
    """Alembic autogenerate's differences between the database and the metadata, for record tables only."""

    def record_names(name, type_, parent_names):
        return type_ != "table" or name.startswith("record_")

    def record_objects(obj, name, type_, reflected, compare_to):
        return type_ != "table" or name.startswith("record_")

    opts = {"compare_type": True, "include_name": record_names, "include_object": record_objects}
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=opts)
        return compare_metadata(context, metadata)


def test_migrated_record_tables_match_metadata(record_url):
    """After upgrade head, autogenerate finds no difference in any record_* table."""
    engine = create_engine_for(record_url)
    upgrade(engine)
    try:
        assert _record_differences(engine) == []
        assert set(record_schema.TABLES) <= set(metadata.tables)
    finally:
        engine.dispose()


def test_0003_downgrades_and_upgrades_again(record_url):
    """Downgrading below 0003 drops every record table; upgrading recreates them as the metadata says."""
    engine = create_engine_for(record_url)
    upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(make_config(connection), "0002")
    with engine.connect() as connection:
        left = [name for name in connection.dialect.get_table_names(connection) if name.startswith("record_")]
    assert left == []
    upgrade(engine)
    try:
        assert _record_differences(engine) == []
    finally:
        engine.dispose()
