"""Appointment and order ids with their namespace: two systems' equal ids are two appointments or orders.

record_appointments gains placer_namespace and filler_namespace (SCH-1.2 / SCH-2.2, else the sending
application), record_orders the same for ORC/OBR-2 and -3; each id is indexed with its namespace.
Rows recorded before this revision take the sending application (MSH-3) of the message their values
came from, which is what the namespace is when the id names none; a row whose message was purged
keeps no namespace, and no message finds it again by its id.

Revision ID: 0020
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None

# table: (id column, namespace column) pairs
_IDS = {
    "record_appointments": (("placer_id", "placer_namespace"), ("filler_id", "filler_namespace")),
    "record_orders": (("placer_number", "placer_namespace"), ("filler_number", "filler_namespace")),
}


def _sender(sending_application: str) -> str:
    """The record's sending application of an MSH-3 as stored: HD-1, else HD-2."""
    parts = sending_application.split("^")
    return parts[0] or (parts[1] if len(parts) > 1 else "")


def upgrade() -> None:
    connection = op.get_bind()
    for table, pairs in _IDS.items():
        for number, namespace in pairs:
            op.add_column(table, sa.Column(namespace, sa.String(100), nullable=True))
            op.drop_index(f"ix_{table}_{number}", table_name=table)
            op.create_index(f"ix_{table}_{number}_{namespace}", table, [number, namespace])
        rows = connection.execute(
            sa.text(
                f"SELECT r.id, r.{pairs[0][0]} AS placer, r.{pairs[1][0]} AS filler, m.sending_application"
                f" FROM {table} r JOIN messages m ON m.id = r.message_id"
            )
        ).all()
        updates = [
            {
                "id": row.id,
                "placer": _sender(row.sending_application)[:100] if row.placer else None,
                "filler": _sender(row.sending_application)[:100] if row.filler else None,
            }
            for row in rows
        ]
        if updates:
            connection.execute(
                sa.text(
                    f"UPDATE {table} SET {pairs[0][1]} = :placer, {pairs[1][1]} = :filler WHERE id = :id"
                ),
                updates,
            )


def downgrade() -> None:
    for table, pairs in _IDS.items():
        for number, namespace in pairs:
            op.drop_index(f"ix_{table}_{number}_{namespace}", table_name=table)
            op.create_index(f"ix_{table}_{number}", table, [number])
        with op.batch_alter_table(table) as batch:  # SQLite drops a column by copying the table
            for _, namespace in pairs:
                batch.drop_column(namespace)
