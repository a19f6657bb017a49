"""Channels: destination queues, transformed content, per-destination events, config history, source files,
and an index for the duplicate lookup.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("messages", sa.Column("transformed", sa.LargeBinary(), nullable=True))
    op.add_column("message_events", sa.Column("destination", sa.String(100), nullable=True))
    # Duplicate lookups miss most of the time; on control_id alone a miss scans every message
    # with a common control id (senders reuse small counters), so the sender and time go in too.
    op.drop_index("ix_messages_control_id", table_name="messages")
    op.create_index(
        "ix_messages_control_id_sending_application_received_at",
        "messages",
        ["control_id", "sending_application", "received_at"],
    )

    op.create_table(
        "deliveries",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("message_id", RowId, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp, nullable=True),
        sa.Column("superseded_at", Timestamp, nullable=True),
        sa.Column("control_id", sa.String(199), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("response_code", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_deliveries_message_id_messages", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_deliveries_channel_destination_status_id",
        "deliveries",
        ["channel", "destination", "status", "id"],
    )
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])

    op.create_table(
        "config_history",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("applied_at", Timestamp, nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_config_history"),
    )

    op.create_table(
        "source_files",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("read_at", Timestamp, nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_source_files"),
    )
    op.create_index("ix_source_files_sha256", "source_files", ["sha256"])


def downgrade() -> None:
    op.drop_table("source_files")
    op.drop_table("config_history")
    op.drop_table("deliveries")
    op.drop_index("ix_messages_control_id_sending_application_received_at", table_name="messages")
    op.create_index("ix_messages_control_id", "messages", ["control_id"])
    op.drop_column("message_events", "destination")
    op.drop_column("messages", "transformed")
