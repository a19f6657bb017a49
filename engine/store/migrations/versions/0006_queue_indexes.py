"""Indexes for the channel runner and the destination queues: no scan of a channel's whole history per pass.

``messages (channel, status, id)`` answers ``pending_for_processing`` (a channel's RECEIVED
messages in id order) with a seek, where the ``channel`` index made SQLite read every message
of the channel and test its status, longer the more the channel had stored.

The queue-head index of ``deliveries`` gains ``next_attempt_at`` after ``id``: queue order is
unchanged, and the due time is read from the index instead of from each row, so ``next_due_at``
and the due rows of an ``on_error: skip`` queue behind many rows waiting for their retry no
longer look up every row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_channel_status_id", "messages", ["channel", "status", "id"])
    op.drop_index("ix_deliveries_channel_destination_status_id", table_name="deliveries")
    op.create_index(
        "ix_deliveries_channel_destination_status_id_next_attempt_at",
        "deliveries",
        ["channel", "destination", "status", "id", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_channel_destination_status_id_next_attempt_at", table_name="deliveries")
    op.create_index(
        "ix_deliveries_channel_destination_status_id",
        "deliveries",
        ["channel", "destination", "status", "id"],
    )
    op.drop_index("ix_messages_channel_status_id", table_name="messages")
