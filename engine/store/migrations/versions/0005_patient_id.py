"""messages.patient_id: PID-3.1 of the first identifier, read at intake: operators find a patient's messages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages stored before this revision have no patient id recorded: ''. With a constant
    # default, both SQLite and PostgreSQL add the column without rewriting the table.
    op.add_column(
        "messages", sa.Column("patient_id", sa.String(length=199), nullable=False, server_default="")
    )
    op.create_index("ix_messages_patient_id", "messages", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_patient_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("patient_id")
