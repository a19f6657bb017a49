"""The content index of messages: SQLite FTS5 or PostgreSQL tsvector with GIN (engine.store.driver.search).

Messages stored before this revision are not indexed (reading and decoding every one would hold
a large store's upgrade for long): a content search finds the messages received since. A
message's row goes when retention prunes its content (a trigger) or the message itself goes.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_SQLITE = (
    "CREATE VIRTUAL TABLE message_text USING fts5(terms, tokenize = 'unicode61 remove_diacritics 2',"
    " detail = 'none')",
    "CREATE TRIGGER message_text_pruned AFTER UPDATE OF pruned_at ON messages"
    " WHEN new.pruned_at IS NOT NULL BEGIN DELETE FROM message_text WHERE rowid = new.id; END",
    "CREATE TRIGGER message_text_deleted AFTER DELETE ON messages"
    " BEGIN DELETE FROM message_text WHERE rowid = old.id; END",
)
_POSTGRESQL = (
    "CREATE TABLE message_text (message_id BIGINT NOT NULL PRIMARY KEY"
    " REFERENCES messages (id) ON DELETE CASCADE, terms TSVECTOR NOT NULL)",
    "CREATE INDEX ix_message_text_terms ON message_text USING gin (terms)",
    "CREATE FUNCTION message_text_pruned() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN DELETE FROM message_text WHERE message_id = NEW.id; RETURN NULL; END $$",
    "CREATE TRIGGER message_text_pruned AFTER UPDATE OF pruned_at ON messages FOR EACH ROW"
    " WHEN (NEW.pruned_at IS NOT NULL) EXECUTE FUNCTION message_text_pruned()",
)


def upgrade() -> None:
    for statement in _SQLITE if op.get_bind().dialect.name == "sqlite" else _POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER message_text_deleted")
        op.execute("DROP TRIGGER message_text_pruned")
    else:
        op.execute("DROP TRIGGER message_text_pruned ON messages")
        op.execute("DROP FUNCTION message_text_pruned()")
    op.execute("DROP TABLE message_text")
