"""SQLite: the patient record's tables go to a file of their own, attached as schema ``record``.

One SQLite file has one write lock, which the record's long transactions and intake's commits
took turns at. In ``engine-record.db`` beside ``engine.db`` (engine.store.driver.record_attach) the
record's transactions take only its lock. A foreign key cannot cross files: there the record's
references to ``messages`` are gone, and retention does what they did (engine.store.retention).

A transaction that writes two files in WAL mode is atomic in each file, not across them: SQLite
commits ``main`` first. So this revision only renames main's record tables (``record_*_moved``),
a change of main alone; ``engine.store.migrations.upgrade`` then copies them into the record's
file in a transaction of that file alone, and drops them from main in one of main alone. A crash
anywhere between leaves the renamed tables, and the next start copies them again. (``alembic
upgrade`` run by hand stops at the renamed tables: ``upgrade`` finishes the move.)

PostgreSQL, and a SQLite store opened by a ``file:`` URI (no file attached), keep their tables.
Downgrading copies the tables back into main with their references to ``messages``.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from alembic import op

from engine.store.driver import record_attach as tables

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if tables.attached(bind):
        tables.rename_tables(bind, "main", tables.record_tables(bind, "main"), tables.MOVED_SUFFIX)


def downgrade() -> None:
    bind = op.get_bind()
    if tables.attached(bind) and (names := tables.record_tables(bind, tables.RECORD_SCHEMA)):
        tables.move_record_tables(bind, tables.RECORD_SCHEMA, "main")
        tables.drop_tables(bind, tables.RECORD_SCHEMA, reversed(names))
