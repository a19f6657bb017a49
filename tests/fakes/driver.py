"""Tables of the driver tests' own, beside the store's: the driver knows no table of the store."""

from __future__ import annotations

import sqlalchemy as sa

from engine.store.schema import RowId, UTCDateTime

metadata = sa.MetaData()
items = sa.Table(
    "driver_items",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(8), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=True),
)
parts = sa.Table(
    "driver_parts",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("item_id", RowId, sa.ForeignKey("driver_items.id"), nullable=False),
    sa.Column("label", sa.Text(), nullable=False),
)


def item_rows(engine: sa.Engine) -> list[tuple]:
    """Every driver_items row as a tuple, in id order."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(items).order_by(items.c.id))]
