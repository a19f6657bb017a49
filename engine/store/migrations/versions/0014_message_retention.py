"""messages.pruned_at: when retention removed a message's content, which the message's row outlives.

A nullable column without a default: both SQLite and PostgreSQL add it without rewriting the
table. The index (channel, pruned_at, received_at) lets a prune seek to a channel's old messages
not pruned yet; building it reads the whole messages table once, at the first start.

Switching an existing SQLite file to ``auto_vacuum=INCREMENTAL`` takes a VACUUM, which cannot run
inside the migration's transaction: ``hl7engine prune --vacuum`` does it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_messages_channel_pruned_at_received_at", "messages", ["channel", "pruned_at", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_messages_channel_pruned_at_received_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("pruned_at")
