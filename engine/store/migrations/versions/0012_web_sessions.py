"""web_sessions: console sessions survive a restart; password hashes leave the config history.

The session token itself is never stored, only its SHA-256. Configurations recorded before this
revision may hold the web users' password hashes (engine.http.users): they are redacted in place.

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-07
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
Timestamp = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# A copy of engine.web.passwords.redact_hashes as it was at this revision.
_HASH = re.compile(r"pbkdf2_sha256\$[0-9]+\$[^$\s\"']+\$[A-Za-z0-9+/=]+")
_REDACTED = "pbkdf2_sha256$<redacted>"


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=100), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("token_sha256", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    history = sa.table("config_history", sa.column("id", RowId), sa.column("content", sa.Text()))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(history.c.id, history.c.content).where(history.c.content.like("%pbkdf2_sha256$%"))
    ).all()
    for row_id, content in rows:
        connection.execute(
            history.update().where(history.c.id == row_id).values(content=_HASH.sub(_REDACTED, content))
        )


def downgrade() -> None:
    # The hashes redacted by the upgrade are gone for good; only the table goes.
    op.drop_table("web_sessions")
