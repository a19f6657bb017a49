"""Paused queues, alert states, and the index the dashboard counts deliveries over a window with.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_NAME = 100
UTCDateTime = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pauses",
        sa.Column("channel", sa.String(_NAME), primary_key=True),
        sa.Column("destination", sa.String(_NAME), primary_key=True),
        sa.Column("paused_at", UTCDateTime, nullable=False),
        sa.Column("paused_by", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("halted_delivery", RowId, nullable=True),
    )
    op.create_table(
        "alert_states",
        sa.Column("rule", sa.String(_NAME), primary_key=True),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("fired_at", UTCDateTime, nullable=True),
        sa.Column("cleared_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_deliveries_updated_at", "deliveries", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_updated_at", table_name="deliveries")
    op.drop_table("alert_states")
    op.drop_table("pauses")
