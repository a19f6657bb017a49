"""record_merges.kind, reason and source_system: who linked two patients and why; the worklist's index.

Merges recorded before this revision came from ADT merge events: their kind is ``merge``.

Revision ID: 0021
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_merges") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="merge"))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("source_system", sa.String(227), nullable=True))
    op.create_index("ix_record_conflicts_resolved_at", "record_conflicts", ["resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_record_conflicts_resolved_at", "record_conflicts")
    with op.batch_alter_table("record_merges") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("source_system")
        batch.drop_column("reason")
        batch.drop_column("kind")
