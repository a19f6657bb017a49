"""The record's person data as Text: sealed values (encryption at rest) are longer than the clear ones.

Names, addresses, telecom values and contacts' names and phones hold base64 text when sealed
(``engine.store.cipher``); their clear values are still fitted to the old lengths by the driver.
Downgrading with sealed values in them fails on PostgreSQL (they do not fit): rekey is no way
back; keep the database at this revision while anything is sealed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# table -> {column: its length before this revision}
_PERSON_DATA = {
    "record_names": {"family": 200, "given": 200, "middle": 200, "prefix": 50, "suffix": 50},
    "record_addresses": {"line1": 200, "line2": 200, "city": 100, "postal_code": 20},
    "record_telecoms": {"value": 200},
    "record_contacts": {"family": 200, "given": 200, "phone": 100},
}


def upgrade() -> None:
    for table, columns in _PERSON_DATA.items():
        with op.batch_alter_table(table) as batch:  # SQLite changes a type by copying the table
            for column, length in columns.items():
                batch.alter_column(
                    column, type_=sa.Text(), existing_type=sa.String(length), existing_nullable=True
                )


def downgrade() -> None:
    for table, columns in _PERSON_DATA.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                batch.alter_column(
                    column, type_=sa.String(length), existing_type=sa.Text(), existing_nullable=True
                )
