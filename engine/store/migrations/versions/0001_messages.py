"""The message store: one row per received message, and its later status history.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision: later schema changes get
# their own revision instead of silently changing this one.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("listener", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=True),
        sa.Column("peer", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_at", Timestamp, nullable=False),
        sa.Column("sending_application", sa.String(227), nullable=False),
        sa.Column("sending_facility", sa.String(227), nullable=False),
        sa.Column("receiving_application", sa.String(227), nullable=False),
        sa.Column("receiving_facility", sa.String(227), nullable=False),
        sa.Column("message_code", sa.String(10), nullable=False),
        sa.Column("trigger_event", sa.String(10), nullable=False),
        sa.Column("message_structure", sa.String(20), nullable=False),
        sa.Column("control_id", sa.String(199), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("processing_id", sa.String(10), nullable=False),
        sa.Column("charset", sa.String(40), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("batch_control_id", sa.String(199), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_control_id", "messages", ["control_id"])
    op.create_index("ix_messages_message_code_trigger_event", "messages", ["message_code", "trigger_event"])
    op.create_index(
        "ix_messages_sending_application_sending_facility",
        "messages",
        ["sending_application", "sending_facility"],
    )
    op.create_index("ix_messages_status", "messages", ["status"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_channel", "messages", ["channel"])

    op.create_table(
        "message_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("message_id", RowId, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_events"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_message_events_message_id_messages", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_message_events_message_id", "message_events", ["message_id"])


def downgrade() -> None:
    op.drop_table("message_events")
    op.drop_table("messages")
