"""The status index leaves out the successful ends, TRANSFORMED and SENT, most of the store.

Every insert of a message processed at intake without destinations, and every delivery's success,
wrote it; a search for one of them alone reads back from the newest message instead
(engine.store.reads.INDEXED_STATUSES). A partial index on SQLite and PostgreSQL alike.

Revision ID: 0024
Revises: 0023_record_ssn
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023_record_ssn"
branch_labels = None
depends_on = None

# As it is written in engine.store.schema (a migration keeps its own copy: the schema may change later).
_WHERE = "status IN ('RECEIVED', 'QUEUED', 'ERROR', 'REJECTED', 'FILTERED')"


def upgrade() -> None:
    op.drop_index("ix_messages_status", "messages")
    op.create_index(
        "ix_messages_status",
        "messages",
        ["status"],
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_status", "messages")
    op.create_index("ix_messages_status", "messages", ["status"])
