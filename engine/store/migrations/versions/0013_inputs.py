"""config_history.inputs and source_files.modified_ns/moved_to: every input a reload compares,
and a file source that reads a resent file again.

config_history.inputs keeps the hashes of the files a configuration read besides its own (CSV
tables, python: modules). source_files.modified_ns and moved_to let the file source recognise
the one file it committed and did not move before a crash (same path, size and modification
time, not yet moved) instead of skipping every file whose content it read once; the lookup is by
path now, so the index on sha256 gives way to one on path. Files read before this revision have
modified_ns 0 and no moved_to: none of them is taken for a file left by a crash.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("config_history", sa.Column("inputs", sa.JSON(), nullable=True))
    # With a constant default, both SQLite and PostgreSQL add the column without rewriting the table.
    op.add_column(
        "source_files", sa.Column("modified_ns", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column("source_files", sa.Column("moved_to", sa.String(length=1000), nullable=True))
    op.drop_index("ix_source_files_sha256", table_name="source_files")
    op.create_index("ix_source_files_path", "source_files", ["path"])


def downgrade() -> None:
    op.drop_index("ix_source_files_path", table_name="source_files")
    op.create_index("ix_source_files_sha256", "source_files", ["sha256"])
    with op.batch_alter_table("source_files") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("moved_to")
        batch.drop_column("modified_ns")
    with op.batch_alter_table("config_history") as batch:
        batch.drop_column("inputs")
