"""The store's tables as SQLAlchemy Core metadata; Alembic migrations must produce exactly this."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from engine.model import NAME_LENGTH, require_aware
from engine.store.cipher import SEALED
from engine.store.reads import STATUS_INDEX_WHERE


class UTCDateTime(sa.types.TypeDecorator):
    """An aware timestamp, written in UTC and read back as an aware UTC datetime on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        require_aware(value, "a stored timestamp")
        return value.astimezone(UTC)

    def bind_processor(self, dialect):
        """On SQLite, the text SQLAlchemy's DATETIME would write, made in one step.

        Its processor (``process_bind_param``, then a ``%``-format of seven fields) cost about
        as much as the rest of a received message's values together.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                require_aware(value, "a stored timestamp")
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite keeps no offset; what it holds was written in UTC by process_bind_param.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); elsewhere ids are 64-bit.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


# One row per message received, per channel that accepted it (channel is NULL when none did).
# Columns typed ``str`` in NewMessage are NOT NULL with '' meaning "absent"; only the columns
# whose absence means something (channel, ack, batch position) are nullable.
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("listener", sa.String(100), nullable=False),
    sa.Column("channel", sa.String(NAME_LENGTH), nullable=True),
    sa.Column("peer", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_at", UTCDateTime(), nullable=False),
    sa.Column("sending_application", sa.String(227), nullable=False),
    sa.Column("sending_facility", sa.String(227), nullable=False),
    sa.Column("receiving_application", sa.String(227), nullable=False),
    sa.Column("receiving_facility", sa.String(227), nullable=False),
    sa.Column("message_code", sa.String(10), nullable=False),
    sa.Column("trigger_event", sa.String(10), nullable=False),
    sa.Column("message_structure", sa.String(20), nullable=False),
    sa.Column("control_id", sa.String(199), nullable=False),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("processing_id", sa.String(10), nullable=False),
    sa.Column("charset", sa.String(40), nullable=False),
    sa.Column("ack_code", sa.String(2), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    # Content columns are sealed when encryption is configured (engine.store.cipher).
    sa.Column("raw", sa.LargeBinary(), nullable=False, info={SEALED: True}),
    sa.Column("ack", sa.LargeBinary(), nullable=True, info={SEALED: True}),
    sa.Column(
        "transformed", sa.LargeBinary(), nullable=True, info={SEALED: True}
    ),  # after the channel's transforms; NULL when it has none
    sa.Column("batch_control_id", sa.String(199), nullable=True),
    sa.Column("batch_index", sa.Integer(), nullable=True),
    # PID-3.1 of the first identifier (unescaped), '' when the message has none: "every message of MRN 12345".
    sa.Column("patient_id", sa.String(199), nullable=False, server_default=""),
    # When retention removed the content (raw, transformed, the deliveries' payloads and answers);
    # NULL while the content is kept. The columns above stay: the message is still found and counted.
    sa.Column("pruned_at", UTCDateTime(), nullable=True),
    # The duplicate lookup (control id + sender within a window); its prefix serves control id searches.
    sa.Index(None, "control_id", "sending_application", "received_at"),
    sa.Index(None, "message_code", "trigger_event"),
    sa.Index(None, "sending_application", "sending_facility"),
    sa.Index(
        None,
        "status",
        sqlite_where=sa.text(STATUS_INDEX_WHERE),
        postgresql_where=sa.text(STATUS_INDEX_WHERE),
    ),
    sa.Index(None, "received_at"),
    sa.Index(None, "patient_id"),
    sa.Index(
        None, "channel", "status", "id"
    ),  # a channel's RECEIVED messages, for its runner; serves channel searches too (0007)
    # A channel's messages whose content retention has not removed, oldest first: a prune seeks
    # to them and never reads the rows it pruned before (0014).
    sa.Index(None, "channel", "pruned_at", "received_at"),
)

# Status history after the insert: the messages row itself records RECEIVED/REJECTED.
# destination is NULL for a change of the message's own status.
message_events = sa.Table(
    "message_events",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("message_id", RowId, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("destination", sa.String(NAME_LENGTH), nullable=True),
    sa.Index(None, "message_id"),
)

# One row per message per destination: the destination's durable FIFO queue is its QUEUED rows
# in id order. A resend or reprocess keeps the old row as history and sets its superseded_at;
# a message's status is rolled up from its rows whose superseded_at is NULL.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("message_id", RowId, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    sa.Column("channel", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("destination", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # QUEUED, SENT, ERROR or FILTERED
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),  # meaningful while QUEUED
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("superseded_at", UTCDateTime(), nullable=True),
    sa.Column("control_id", sa.String(199), nullable=False),  # MSH-10 of the payload
    sa.Column(
        "payload", sa.LargeBinary(), nullable=True, info={SEALED: True}
    ),  # the encoded bytes to send; NULL when never encoded
    sa.Column("response", sa.LargeBinary(), nullable=True, info={SEALED: True}),
    sa.Column("response_code", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    # The queue in order; next_attempt_at is read from the index (due rows, the next due time).
    sa.Index(None, "channel", "destination", "status", "id", "next_attempt_at"),
    sa.Index(None, "message_id"),
    sa.Index(None, "updated_at"),  # the dashboard's counts over a window (0017)
)

# Every configuration the engine applied, and what changed from the one before.
config_history = sa.Table(
    "config_history",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("changes", sa.Text(), nullable=False),
    # The files it read besides its own (CSV tables, python: modules): kind, name, path, sha256 each.
    # NULL for a configuration recorded before revision 0013.
    sa.Column("inputs", sa.JSON(), nullable=True),
)

# Every file a file source read, written in the same transaction as its messages. A row whose
# moved_to is NULL is a file committed and not (yet) moved away: path, size and modified_ns tell
# the file source, after a crash, that the file it finds is that one (0013).
source_files = sa.Table(
    "source_files",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("read_at", UTCDateTime(), nullable=False),
    sa.Column("message_count", sa.Integer(), nullable=False),
    # st_mtime_ns of the file when read; 0 for files read before revision 0013
    sa.Column("modified_ns", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("moved_to", sa.String(1000), nullable=True),  # where the file went; NULL until moved
    sa.Index(None, "path"),
)

# Who saw or changed which message, when, and from where (engine.store.audit). message_id is
# a plain column, not a foreign key: the trail outlives the messages it speaks of.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("user", sa.String(100), nullable=False),
    # view, raw, resend, reprocess, login, login_failed, logout
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("message_id", RowId, nullable=True),
    sa.Column("remote", sa.String(200), nullable=False),  # the client's address as the server saw it
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Index(None, "message_id"),
    sa.Index(None, "at"),
)

# Console sessions, so that a restart does not log everyone out (engine.store.sessions). The
# cookie's token is never stored: only its SHA-256, which cannot be turned back into a cookie.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

# The engine processes that share this store (engine.channels.leases): one row per process start,
# its heartbeat, and where it hears wake-ups. A node whose heartbeat is older than its lease is dead.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=False),  # engine.cluster.node (the machine's)
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("roles", sa.String(100), nullable=False),  # "intake,processing,delivery,jobs"
    sa.Column("wake_address", sa.String(100), nullable=True),  # host:port of its UDP wake-ups
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Index(None, "heartbeat_at"),
)

# Work that one process at a time may do: a channel's processing (channel:<name>), a destination's
# queue (queue:<channel>/<destination>), a scheduled job (job:<name>). ``token`` grows at every new
# holder: a write made under a lease names it, so a holder that lost its lease cannot write.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("key", sa.String(2 * NAME_LENGTH + 10), primary_key=True),
    sa.Column("holder", sa.BigInteger(), nullable=True),  # nodes.id, None when free
    sa.Column("token", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("acquired_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)

# A destination queue's journal kept in the store (engine.channels.journal), for queues that another
# node may take over: the lines the file journal would hold, for whoever holds the queue next.
queue_journals = sa.Table(
    "queue_journals",
    metadata,
    sa.Column("key", sa.String(2 * NAME_LENGTH + 10), primary_key=True),
    sa.Column("lines", sa.Text(), nullable=False, server_default=""),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
)

# Queues an operator paused (engine.store.controls): a whole channel's (destination '') or one
# destination's. A paused queue keeps filling; its dispatcher sends nothing until the row is gone.
# ``halted_delivery`` is the delivery an ``on_error: halt`` queue stopped at, retried first on resume.
pauses = sa.Table(
    "pauses",
    metadata,
    sa.Column("channel", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("destination", sa.String(NAME_LENGTH), primary_key=True),  # '' for the whole channel
    sa.Column("paused_at", UTCDateTime(), nullable=False),
    sa.Column("paused_by", sa.String(100), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("halted_delivery", RowId, nullable=True),
)

# Each alert rule's state (engine.store.controls), so that a restart neither fires it again nor forgets it.
alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("rule", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("firing", sa.Boolean(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("fired_at", UTCDateTime(), nullable=True),
    sa.Column("cleared_at", UTCDateTime(), nullable=True),
)
