"""The record's remaining identity data: PID-19 (SSN), accounts and merged visits, per-field times.

record_patients gains ssn (sealed like other person data when encryption is configured) and
sent_at (the message time of the newest message that sent each demographic field or list; NULL on
rows written before, whose as_of stands for every field); record_visits gains account_number
(PID-18) and merged_into_id (A42).

Revision ID: 0023_record_ssn
Revises: 0022
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0023_record_ssn"
down_revision = "0022"
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_VISIT_FK = "fk_record_visits_merged_into_id_record_visits"


def upgrade() -> None:
    # Plain ADD COLUMN, not batch: SQLite would copy record_patients and record_visits, whose rows
    # other tables reference, and refuse to drop the originals.
    op.add_column("record_patients", sa.Column("ssn", sa.Text(), nullable=True))
    op.add_column("record_patients", sa.Column("sent_at", sa.JSON(), nullable=True))
    op.add_column("record_visits", sa.Column("account_number", sa.String(199), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its reference in one statement (alembic would alter constraints).
        op.execute(
            f"ALTER TABLE record_visits ADD COLUMN merged_into_id INTEGER CONSTRAINT {_VISIT_FK}"
            " REFERENCES record_visits (id)"
        )
    else:
        merged = sa.Column("merged_into_id", _ROW_ID, nullable=True)
        op.add_column("record_visits", merged)
        op.create_foreign_key(_VISIT_FK, "record_visits", "record_visits", ["merged_into_id"], ["id"])
    op.create_index("ix_record_visits_account_number", "record_visits", ["account_number"])


def downgrade() -> None:
    op.drop_index("ix_record_visits_account_number", "record_visits")
    op.drop_column("record_visits", "account_number")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("record_visits") as batch:  # SQLite drops a referencing column by a copy
            batch.drop_column("merged_into_id")
    else:
        op.drop_constraint(_VISIT_FK, "record_visits", type_="foreignkey")
        op.drop_column("record_visits", "merged_into_id")
    op.drop_column("record_patients", "sent_at")
    op.drop_column("record_patients", "ssn")
