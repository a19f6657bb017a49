"""Nodes, leases and queue journals: several engine processes and nodes sharing one store.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_KEY = 2 * 100 + 10  # two names and a prefix
UTCDateTime = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("roles", sa.String(100), nullable=False),
        sa.Column("wake_address", sa.String(100), nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_nodes_heartbeat_at", "nodes", ["heartbeat_at"])
    op.create_table(
        "leases",
        sa.Column("key", sa.String(_KEY), primary_key=True),
        sa.Column("holder", sa.BigInteger(), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("acquired_at", UTCDateTime, nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "queue_journals",
        sa.Column("key", sa.String(_KEY), primary_key=True),
        sa.Column("lines", sa.Text(), nullable=False, server_default=""),
        sa.Column("updated_at", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("queue_journals")
    op.drop_table("leases")
    op.drop_index("ix_nodes_heartbeat_at", table_name="nodes")
    op.drop_table("nodes")
