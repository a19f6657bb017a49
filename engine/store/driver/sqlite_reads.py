"""Reads of a SQLite store with the stdlib's sqlite3: what read-only commands need, without SQLAlchemy.

Importing SQLAlchemy costs a command some 0.15–0.25 s, more than the rest of ``hl7engine messages
list`` together (docs/performance.md, "Command start-up"). ``SQLiteReads`` answers what
``MessageRepository.search``, ``get`` and ``channel_names``, ``ClusterRepository.view`` and
``RecordOperator.worklist`` (the record's open conflicts: ids and identifiers, no sealed data),
``DashboardRepository.counts`` and ``ControlRepository.pauses`` answer,
and the record's rows for ``patient find`` and ``show`` (``record``, ``engine.store.driver.record_reads``),
with the same plain data (``engine.store.reads``); tests/store/driver/test_sqlite_reads.py
compares both on a store filled with the corpus. Values are read as SQLAlchemy's SQLite dialect
wrote them: a timestamp is UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (a ``datetime`` field here), and
content (a ``bytes`` field) is opened with the store's cipher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from engine.errors import StoreError
from engine.hl7.terms import query_terms
from engine.model import Status, require_aware, utc_now
from engine.store.cipher import Cipher
from engine.store.defaults import DEFAULT_LEASE_SECONDS
from engine.store.driver.record_attach import attach_record, record_file
from engine.store.driver.record_reads import RecordRows
from engine.store.driver.sqlite_values import read_time, stored_time
from engine.store.reads import (
    NODES_SHOWN,
    SETTLED,
    WORKLIST_SHOWN,
    ClusterView,
    ContentSearchOff,
    DashboardCounts,
    DeliverySummary,
    HeldLease,
    MessageEvent,
    MessageQuery,
    MessageSummary,
    NodeView,
    Pause,
    QueueState,
    StoredMessage,
    dashboard_counts,
    held_lease,
    lease_row,
    node_view,
    status_index_term,
)

__all__ = ["SQLiteReads", "fts5_match", "sqlite_path"]

# SQLite's primary result codes SQLITE_BUSY and SQLITE_LOCKED (as engine.store.driver.errors judges them).
_LOCK_CODES = frozenset({5, 6})
_URL_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL; None for any other (PostgreSQL, a query, escapes).

    What SQLAlchemy reads as that same file: a URL with ``?``, ``#`` or ``%`` is left to it.
    """
    for prefix in _URL_PREFIXES:
        if url.startswith(prefix):
            path = url[len(prefix) :]
            if path and path != ":memory:" and not any(mark in path for mark in "?#%"):
                return Path(path)
    return None


def fts5_match(terms: Sequence[str]) -> str:
    """The FTS5 query matching messages whose terms start with every one of ``terms`` (query_terms)."""
    if not terms:
        raise ValueError("a content search needs at least one term")
    return " AND ".join(f'"{term}"*' for term in terms)


def _columns(cls) -> tuple[str, ...]:
    """The columns a dataclass is read from: its fields, but the tuples of other rows."""
    return tuple(f.name for f in dataclasses.fields(cls) if not f.type.startswith("tuple"))


def _kinds(cls) -> tuple[frozenset[str], frozenset[str]]:
    """(the timestamp fields, the content fields) of a dataclass, by their types."""
    named = dataclasses.fields(cls)
    return (
        frozenset(f.name for f in named if f.type.startswith("datetime")),
        frozenset(f.name for f in named if f.type.startswith("bytes")),
    )


@contextlib.contextmanager
def _errors(action: str) -> Iterator[None]:
    """sqlite3's errors as StoreError, told without values (its first line; a data error by class)."""
    try:
        yield
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", None)
        locked = code is not None and code & 0xFF in _LOCK_CODES
        said = type(error).__name__ if isinstance(error, sqlite3.DataError) else str(error).split("\n", 1)[0]
        raise StoreError(
            f"{action} failed: {said or type(error).__name__}",
            locked=locked,
            transient=isinstance(error, sqlite3.OperationalError | sqlite3.InterfaceError),
        ) from error


class SQLiteReads:
    """Blocking reads of one SQLite store file; made by ``open``, ended by ``close``."""

    def __init__(
        self, connection: sqlite3.Connection, cipher: Cipher, *, clock: Callable[[], datetime] = utc_now
    ):
        self._connection = connection
        self._cipher = cipher
        self._clock = clock

    @classmethod
    def open(
        cls, path: Path, cipher: Cipher, *, lock_timeout: float = 5.0, clock: Callable[[], datetime] = utc_now
    ) -> SQLiteReads:
        """The reads of the store file at ``path`` (never created); StoreError if it is no store."""
        uri = f"file:{quote(str(path))}?mode=rw"  # rw: a missing file is an error, not a new database
        with _errors("opening the store"):
            # autocommit: each read below is its own explicit transaction (one snapshot of the file).
            connection = sqlite3.connect(uri, uri=True, timeout=lock_timeout, isolation_level=None)
            try:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
                ).fetchone()
            except BaseException:
                connection.close()
                raise
        if found is None:
            connection.close()
            raise StoreError(f"{path} is not an hl7engine store (it has no messages table)")
        if (record := record_file(path)).is_file():  # else the record's tables are still in main (0024)
            with _errors("opening the record's file"):
                attach_record(connection, f"file:{quote(str(record))}?mode=rw")
        connection.row_factory = sqlite3.Row
        return cls(connection, cipher, clock=clock)

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    @contextlib.contextmanager
    def _snapshot(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection inside one read transaction: every statement sees the same store."""
        with _errors(action):
            self._connection.execute("BEGIN")
            try:
                yield self._connection
            finally:
                if self._connection.in_transaction:  # an error may have ended it already
                    self._connection.execute("ROLLBACK")  # nothing was written: only the snapshot ends

    def _values(self, row: sqlite3.Row, kinds: tuple[frozenset[str], frozenset[str]]) -> dict:
        """A row as the dataclass fields of the same names: timestamps parsed, content opened."""
        times, content = kinds
        values = dict(zip(row.keys(), row, strict=True))
        for name in times:
            values[name] = read_time(values[name])
        for name in content:
            values[name] = self._cipher.open(values[name])
        return values

    def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Summaries matching ``query``, newest (highest id) first, at most ``query.limit``."""
        if query.text is not None and self._cipher.sealing:
            raise ContentSearchOff()
        where, parameters = _criteria(query)
        columns = ", ".join(f"messages.{name}" for name in _SUMMARY)
        if query.text is not None:
            sql = (
                f"SELECT {columns} FROM messages JOIN message_text ON message_text.rowid = messages.id"
                f"{_where([*where, 'message_text MATCH ?'])} ORDER BY message_text.rowid DESC LIMIT ?"
            )
            parameters += [fts5_match(query_terms(query.text)), query.limit]
        else:
            sql = f"SELECT {columns} FROM messages{_where(where)} ORDER BY messages.id DESC LIMIT ?"
            parameters.append(query.limit)
        with self._snapshot("searching messages") as connection:
            return [
                MessageSummary(**self._values(row, _SUMMARY_KINDS))
                for row in connection.execute(sql, parameters)
            ]

    def get(self, message_id: int) -> StoredMessage | None:
        """One message with its content, deliveries and status history, or None when there is no such id."""
        with self._snapshot("reading a message") as connection:
            row = connection.execute(
                f"SELECT {', '.join(_STORED)} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return None
            routed = connection.execute(
                f"SELECT {', '.join(_DELIVERY)} FROM deliveries WHERE message_id = ? ORDER BY id",
                (message_id,),
            ).fetchall()
            history = connection.execute(
                f"SELECT {', '.join(_EVENT)} FROM message_events WHERE message_id = ? ORDER BY at, id",
                (message_id,),
            ).fetchall()
        return StoredMessage(
            **self._values(row, _STORED_KINDS),
            deliveries=tuple(DeliverySummary(**self._values(d, _DELIVERY_KINDS)) for d in routed),
            events=tuple(MessageEvent(**self._values(e, _EVENT_KINDS)) for e in history),
        )

    def channel_names(self) -> list[str]:
        """The channels of the stored messages, sorted (a channel no longer configured included)."""
        with self._snapshot("listing channels") as connection:
            found = connection.execute("SELECT DISTINCT channel FROM messages WHERE channel IS NOT NULL")
            return sorted(row[0] for row in found)

    def view(self, now: datetime | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> ClusterView:
        """The nodes shown at ``now`` (alive, or stopped or dead within NODES_SHOWN) and every lease row."""
        now = self._clock() if now is None else now
        require_aware(now, "now")
        since = stored_time(now - NODES_SHOWN)
        with self._snapshot("reading the nodes") as connection:
            rows = connection.execute(
                "SELECT * FROM nodes WHERE heartbeat_at >= ? OR stopped_at >= ?"
                " ORDER BY name, started_at, id",
                (since, since),
            ).fetchall()
            held: dict[int, list] = {}
            for lease in connection.execute(
                "SELECT holder, key, token, acquired_at, expires_at FROM leases"
                " WHERE holder IS NOT NULL ORDER BY key"
            ):
                held.setdefault(lease["holder"], []).append(
                    held_lease(self._values(lease, _LEASE_KINDS), now)
                )
            leases = connection.execute(
                "SELECT leases.key, leases.holder, nodes.name, leases.token, leases.acquired_at,"
                " leases.expires_at FROM leases LEFT OUTER JOIN nodes ON nodes.id = leases.holder"
                " ORDER BY leases.key"
            ).fetchall()
        nodes = tuple(
            node_view(self._values(row, _NODE_KINDS), held.get(row["id"], ()), now, lease_seconds)
            for row in rows
        )
        return ClusterView(
            now,
            lease_seconds,
            nodes,
            tuple(lease_row(self._values(row, _LEASE_KINDS), now) for row in leases),
        )

    def worklist(self, limit: int = WORKLIST_SHOWN) -> list[dict]:
        """The record's open conflicts, oldest first, as ``RecordOperator.worklist`` gives them."""
        with self._snapshot("reading the record's worklist") as connection:
            rows = connection.execute(
                "SELECT id, kind, patient_id, other_patient_id, authority, value, detail, created_at,"
                " message_id FROM record_conflicts WHERE resolved_at IS NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {
                **dict(zip(row.keys(), row, strict=True)),
                "created_at": read_time(row["created_at"]).isoformat(),
            }
            for row in rows
        ]

    @contextlib.contextmanager
    def record(self, action: str) -> Iterator[RecordRows]:
        """The record's reads (``patient find`` and ``show``) in one snapshot; errors told as ``action``."""
        with self._snapshot(action) as connection:
            yield RecordRows(connection, self._cipher)

    def counts(self, since: datetime, queues: Iterable[tuple[str, str]]) -> DashboardCounts:
        """What ``DashboardRepository.counts`` answers: the window's counts and the queues' state now."""
        bound = stored_time(since)
        with self._snapshot("reading the dashboard's counts") as connection:
            received = connection.execute(
                "SELECT listener, channel, status, count(*), max(received_at) FROM messages"
                " WHERE received_at >= ? GROUP BY listener, channel, status",
                (bound,),
            ).fetchall()
            settled = connection.execute(
                "SELECT channel, destination, status, count(*) FROM deliveries"
                f" WHERE updated_at >= ? AND status IN ({', '.join('?' * len(SETTLED))})"
                " GROUP BY channel, destination, status",
                (bound, *SETTLED),
            ).fetchall()
            channels_queued = dict(
                connection.execute(
                    "SELECT channel, count(*) FROM messages WHERE channel IS NOT NULL AND status = ?"
                    f" AND {status_index_term(Status.QUEUED)} GROUP BY channel",
                    (Status.QUEUED,),
                ).fetchall()
            )
            return dashboard_counts(
                since,
                self._clock,
                [(*row[:4], read_time(row[4])) for row in received],
                settled,
                channels_queued,
                queues,
                functools.partial(_queue_state, connection),
            )

    def pauses(self) -> list[Pause]:
        """What ``ControlRepository.pauses`` answers: every pause, by channel then destination."""
        with self._snapshot("reading paused queues") as connection:
            rows = connection.execute(
                "SELECT channel, destination, paused_at, paused_by, reason, halted_delivery FROM pauses"
                " ORDER BY channel, destination"
            ).fetchall()
        return [Pause(row[0], row[1], read_time(row[2]), *row[3:]) for row in rows]


def _queue_state(connection: sqlite3.Connection, channel: str, destination: str, settled: dict) -> QueueState:
    """One queue's depth, head and last error, as engine.store.dashboard reads them."""
    of_queue = "channel = ? AND destination = ? AND status = ?"
    [depth] = connection.execute(
        f"SELECT count(*) FROM deliveries WHERE {of_queue}", (channel, destination, Status.QUEUED)
    ).fetchone()
    head = connection.execute(
        f"SELECT created_at, attempts, reason FROM deliveries WHERE {of_queue} ORDER BY id LIMIT 1",
        (channel, destination, Status.QUEUED),
    ).fetchone()
    error = connection.execute(
        f"SELECT reason, updated_at FROM deliveries WHERE {of_queue} ORDER BY id DESC LIMIT 1",
        (channel, destination, Status.ERROR),
    ).fetchone()
    return QueueState(
        depth=depth,
        oldest_queued_at=read_time(head[0]) if head else None,
        head_attempts=head[1] if head else 0,
        head_reason=head[2] if head else "",
        last_error=error[0] if error else "",
        last_error_at=read_time(error[1]) if error else None,
        settled=dict(settled),
    )


def _criteria(query: MessageQuery) -> tuple[list[str], list]:
    """The WHERE terms of ``query`` (its content words aside) and their parameters, in order."""
    equal = (
        ("control_id", query.control_id),
        ("patient_id", query.patient_id),
        ("sending_application", query.sending_application),
        ("sending_facility", query.sending_facility),
        ("status", query.status),
        ("channel", query.channel),
        ("listener", query.listener),
    )
    if query.message_type is not None:
        parts = zip(("message_code", "trigger_event", "message_structure"), query.message_type.split("^"))
        equal += tuple((column, part) for column, part in parts if part)
    where = [f"messages.{column} = ?" for column, value in equal if value is not None]
    parameters: list = [value for _, value in equal if value is not None]
    if (indexed := status_index_term(query.status)) is not None:
        where.append(indexed)
    for clause, moment in (
        ("messages.received_at >= ?", query.since),
        ("messages.received_at < ?", query.until),
    ):
        if moment is not None:
            where.append(clause)
            parameters.append(stored_time(moment))
    if query.before_id is not None:
        where.append("messages.id < ?")
        parameters.append(query.before_id)
    return where, parameters


def _where(terms: list[str]) -> str:
    return f" WHERE {' AND '.join(terms)}" if terms else ""


_SUMMARY = _columns(MessageSummary)
_STORED = _columns(StoredMessage)
_DELIVERY = _columns(DeliverySummary)
_EVENT = _columns(MessageEvent)
_SUMMARY_KINDS = _kinds(MessageSummary)
_STORED_KINDS = _kinds(StoredMessage)
_DELIVERY_KINDS = _kinds(DeliverySummary)
_EVENT_KINDS = _kinds(MessageEvent)
_NODE_KINDS = _kinds(NodeView)
_LEASE_KINDS = _kinds(HeldLease)
