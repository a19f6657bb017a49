"""record_patients.list_digests: which of a patient's lists the record knows it holds as last written.

A message that sends a patient's names, addresses, telecoms or contacts as they are stored
leaves them without reading them. Patients recorded before this revision have none:
their next message reads and compares its lists as before, and records their digests.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("record_patients", sa.Column("list_digests", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("record_patients") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("list_digests")
