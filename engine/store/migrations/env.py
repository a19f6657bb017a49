"""Alembic environment: migrates the connection that engine.store.migrations.upgrade passes in."""

from alembic import context

# The migrations are the history of the whole database: the record keeps its tables beside the
# store's, on the same metadata (only autogenerate reads it, to draft a revision).
from engine.record import schema as record_schema  # noqa: F401  (its tables share the database)
from engine.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
