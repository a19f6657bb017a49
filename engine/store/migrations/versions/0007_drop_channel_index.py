"""Drop ix_messages_channel: 0006's (channel, status, id) index starts with channel and serves its queries.

Every index costs each intake commit a page write and each message a b-tree insert; this one
had become a copy of another's prefix.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_messages_channel", table_name="messages")


def downgrade() -> None:
    op.create_index("ix_messages_channel", "messages", ["channel"])
