"""Alembic environment: migrates the connection that engine.store.migrations.upgrade passes in."""

from alembic import context

from engine.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
