"""Stored messages: the blocking repository of the messages table (and the files messages came from).

``MessageRepository`` does the SQL of messages and returns plain frozen dataclasses; it blocks,
so it runs on threads (``MessageStore`` in ``message_store.py``) and in the CLI, as do
``QueueRepository`` (``queues.py``) and ``ConfigRepository`` (``configs.py``). The intake's
insert goes to the driver (``InsertReturningIds``); everything else is SQLAlchemy Core.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa

from engine.errors import StoreError
from engine.hl7.charset import decode
from engine.hl7.terms import indexed_text, query_terms, search_terms
from engine.model import DeliveryResult, NewMessage, Outcome, SourceFile, Status, require_aware, utc_now
from engine.store.cipher import SEALED, cipher_of
from engine.store.driver import ContentIndex, InsertReturningIds, fit_row, store_errors
from engine.store.processing import INTAKE_CHILDREN, intake_rows
from engine.store.reads import (
    ContentSearchOff,
    DeliverySummary,
    MessageEvent,
    MessageQuery,
    MessageSummary,
    StoredMessage,
    status_index_term,
)
from engine.store.schema import deliveries, message_events, messages, source_files

_NEW_MESSAGE_FIELDS = tuple(
    f.name for f in dataclasses.fields(NewMessage) if f.name not in ("deliveries", "findings")
)
_SUMMARY_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(MessageSummary))
_STORED_COLUMNS = tuple(
    messages.c[f.name] for f in dataclasses.fields(StoredMessage) if f.name not in ("deliveries", "events")
)
_EVENT_COLUMNS = tuple(message_events.c[f.name] for f in dataclasses.fields(MessageEvent))
_DELIVERY_COLUMNS = tuple(deliveries.c[f.name] for f in dataclasses.fields(DeliverySummary))
# An insert fills NewMessage's fields, then status_at (received_at: the status is the one received).
_MESSAGE_VALUES = operator.attrgetter(*_NEW_MESSAGE_FIELDS)
# The places of the content fields among them, sealed when encryption is configured.
_SEALED_VALUES = tuple(
    index for index, name in enumerate(_NEW_MESSAGE_FIELDS) if messages.c[name].info.get(SEALED)
)


def _source_file_row(source_file: SourceFile, message_count: int, read_at: datetime) -> dict:
    values = {
        "path": source_file.path,
        "sha256": source_file.sha256,
        "size": source_file.size,
        "modified_ns": source_file.modified_ns,
        "read_at": read_at,
        "message_count": message_count,
    }
    return fit_row(source_files, values)


def _same_file(path: str, size: int, modified_ns: int) -> tuple[sa.ColumnElement[bool], ...]:
    """The rows of a file stored and not moved yet, by the file's path, size and modification time."""
    c = source_files.c
    path = fit_row(source_files, {"path": path})["path"]  # as a long path was stored
    return (c.path == path, c.size == size, c.modified_ns == modified_ns, c.moved_to.is_(None))


def _index_for(query: MessageQuery, index: ContentIndex | None) -> ContentIndex | None:
    """The index a query searches (None when it searches no content); ContentSearchOff when there is none."""
    if query.text is not None and index is None:
        raise ContentSearchOff()
    return index if query.text is not None else None


def _criteria(query: MessageQuery, index: ContentIndex | None) -> list[sa.ColumnElement[bool]]:
    """The WHERE of ``query``; ``index`` searches content (None: ContentSearchOff for a query that asks)."""
    c = messages.c
    equal = (
        (c.control_id, query.control_id),
        (c.patient_id, query.patient_id),
        (c.sending_application, query.sending_application),
        (c.sending_facility, query.sending_facility),
        (c.status, query.status),
        (c.channel, query.channel),
        (c.listener, query.listener),
    )
    criteria = [column == value for column, value in equal if value is not None]
    if (indexed := status_index_term(query.status)) is not None:
        criteria.append(sa.text(indexed))
    if query.message_type is not None:
        parts = query.message_type.split("^")
        type_columns = (c.message_code, c.trigger_event, c.message_structure)
        criteria += [column == part for column, part in zip(type_columns, parts) if part]
    if query.since is not None:
        criteria.append(c.received_at >= query.since)
    if query.until is not None:
        criteria.append(c.received_at < query.until)
    searched = _index_for(query, index)
    if searched is not None:
        criteria.append(searched.matching(c.id, query_terms(query.text)))
    return criteria


class MessageRepository:
    """Blocking reads and writes of stored messages, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock
        self._cipher = cipher_of(engine)
        # With content sealed, an index of its words would tell in clear what the cipher hides.
        self._index = None if self._cipher.sealing else ContentIndex(engine.dialect)
        self._insert = InsertReturningIds(
            messages,
            _NEW_MESSAGE_FIELDS,
            engine.dialect,
            copies={"status_at": "received_at"},
            children=INTAKE_CHILDREN,
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the repository uses."""
        return self._engine

    def insert(self, new_messages: Sequence[NewMessage], source_file: SourceFile | None = None) -> list[int]:
        """Store the messages (and their source file) in one transaction; returns their ids in order."""
        [ids] = self.insert_groups([(new_messages, source_file)])
        return ids

    def insert_groups(
        self,
        groups: Sequence[tuple[Sequence[NewMessage], SourceFile | None]],
        *,
        connection: sa.Connection | None = None,
    ) -> list[list[int]]:
        """Store groups of messages, each with its optional source file, in one transaction; each group's ids.

        ``connection`` is one its caller keeps (the writer thread does) and that is in no
        transaction; without it one is taken from the pool for the call.
        """
        every = [m for new_messages, _ in groups for m in new_messages]
        try:
            rows = [self._insert.values(self._sealed(_MESSAGE_VALUES(m))) for m in every]
        except ValueError as error:  # e.g. a naive received_at: a caller's bug, never a lock
            raise StoreError(f"storing messages failed: {error}") from error
        read_at = self._clock()
        files = [
            _source_file_row(source_file, len(new_messages), read_at)
            for new_messages, source_file in groups
            if source_file is not None
        ]
        if not rows and not files:
            return [[] for _ in groups]
        processed = any(m.deliveries is not None or m.findings for m in every)
        with store_errors("storing messages"):
            if connection is not None:
                return self._split(groups, self._store(connection, every, rows, files, processed, read_at))
            with self._engine.connect() as connection:
                return self._split(groups, self._store(connection, every, rows, files, processed, read_at))

    def _store(
        self,
        connection: sa.Connection,
        every: list[NewMessage],
        rows: list[list],
        files: list[dict],
        processed: bool,
        read_at: datetime,
    ) -> list[int]:
        """insert_groups' writes on ``connection``: the ids of every message, in order."""
        # Each deliveries and events row names its message by position (1, 2, ...).
        children = intake_rows(every, read_at, self._cipher) if processed else ()
        if rows and not files and self._insert.sqlite:
            # TRANSACTION: every message given, with the deliveries and events of those processed
            # at intake, committed together or not at all (one group commit), on the driver: the
            # intake's commit, one message each at one connection.
            return self._insert.run_committed(connection, rows, children)
        if rows and not files and not self._insert.sqlite and self._insert.fits_one_statement(rows):
            return self._insert.run_alone(connection, rows, children)
        # TRANSACTION: every message and source file record given, with the deliveries and
        # events of those processed at intake, committed together or not at all (one group
        # commit): a file is never recorded without its messages, nor they without it, and a
        # message is never stored processed without its deliveries.
        with connection.begin():
            ids = self._insert.run(connection, rows, children) if rows else []
            if files:
                connection.execute(sa.insert(source_files), files)
        return ids

    def _sealed(self, values: tuple) -> tuple:
        """A message's insert values with its content sealed (as they are when nothing is sealed)."""
        if not self._cipher.sealing:
            return values
        sealed = list(values)
        for index in _SEALED_VALUES:
            sealed[index] = self._cipher.seal(sealed[index])
        return tuple(sealed)

    @staticmethod
    def _split(
        groups: Sequence[tuple[Sequence[NewMessage], SourceFile | None]], ids: list[int]
    ) -> list[list[int]]:
        """The ids of each group, from the ids of all their messages in order."""
        result, start = [], 0
        for new_messages, _ in groups:
            result.append(ids[start : start + len(new_messages)])
            start += len(new_messages)
        return result

    def index_pending(self, limit: int = 500) -> int:
        """Index the content of up to ``limit`` messages not indexed yet, oldest first; how many it indexed.

        ``pending_terms`` then ``add_terms``, in one call (the engine runs the first on a reader
        thread and only the second on the writer: ``MessageStore.index_pending``).
        """
        ids, terms = self.pending_terms(limit)
        return self.add_terms(ids, terms)

    def pending_terms(self, limit: int = 500) -> tuple[list[int], list[str]]:
        """The ids of up to ``limit`` messages not indexed yet, oldest first, and their words.

        Not on intake's path: their words (engine.hl7.terms) cost more than the insert itself,
        and an index written a batch at a time costs a fraction of one written a group commit at
        a time (docs/performance.md). A read: it holds no write lock while it reads and splits.
        Every message gets a row, a pruned one an empty one, so the indexed messages are those up
        to the newest row. Nothing with content encrypted at rest.
        """
        if self._index is None:
            return [], []
        m = messages.c
        with store_errors("reading messages to index"), self._engine.connect() as connection:
            found = connection.execute(
                sa.select(m.id, m.raw, m.pruned_at)
                .where(self._index.pending(m.id, connection, limit))
                .order_by(m.id)
                .limit(limit)
            ).all()
        # FTS5 splits the fields' text itself (in C); PostgreSQL's tsvector takes terms as given.
        words = indexed_text if self._index.sqlite else search_terms
        terms = [
            "" if row.pruned_at is not None else words(decode(self._cipher.open(row.raw)).text)
            for row in found
        ]
        return [row.id for row in found], terms

    def add_terms(self, ids: Sequence[int], terms: Sequence[str]) -> int:
        """Write the index rows of ``pending_terms``; a message pruned since it was read gets none.

        The messages are locked (PostgreSQL) while their rows are written, so a prune waits and
        its trigger then removes what was written; SQLite has one writer. How many it indexed.
        """
        if self._index is None or not ids:
            return 0
        m = messages.c
        # TRANSACTION: the index rows of a batch of messages, all or none (a batch is read again).
        with store_errors("indexing messages"), self._engine.begin() as connection:
            pruned = set(
                connection.execute(
                    sa.select(m.id).where(m.id.in_(ids), m.pruned_at.is_not(None)).with_for_update()
                ).scalars()
            )
            kept = ["" if i in pruned else text for i, text in zip(ids, terms, strict=True)]
            self._index.add(connection, self._index.rows(list(ids), kept))
        return len(ids)

    def record_answer(self, message_id: int, ack_code: str, ack: bytes) -> None:
        """Keep the answer a sender was given after its message was stored (respond: after_processing)."""
        statement = (
            sa.update(messages)
            .where(messages.c.id == message_id)
            .values(ack_code=ack_code[: messages.c.ack_code.type.length], ack=ack)
        )
        with store_errors("storing an answer"), self._engine.begin() as connection:
            connection.execute(statement)

    def outcomes(self, message_ids: Sequence[int]) -> dict[int, tuple[Status, str, list[DeliveryResult]]]:
        """The final outcome of those of the messages that have one: {id: (status, reason, results)}.

        Final: processed and no delivery still QUEUED. ``results`` are the deliveries that went out
        or failed (their answers' codes, their reasons, no content); ``reason`` joins theirs, or is
        the message's own (a filter or a transform) when none went out. What a sender waiting with
        ``respond: after_processing`` is told, when another process did the work.
        """
        if not message_ids:
            return {}
        m, d = messages.c, deliveries.c
        final = sa.select(m.id, m.status, m.error).where(
            m.id.in_(list(message_ids)), m.status.not_in([Status.RECEIVED, Status.QUEUED])
        )
        delivered = (
            sa.select(d.message_id, d.status, d.response_code, d.reason)
            .where(
                d.message_id.in_(list(message_ids)),
                d.superseded_at.is_(None),
                d.status.in_([Status.SENT, Status.ERROR]),
            )
            .order_by(d.id)
        )
        with store_errors("reading outcomes"), self._engine.connect() as connection:
            rows = connection.execute(final).all()
            results: dict[int, list[DeliveryResult]] = {}
            if rows:
                for row in connection.execute(delivered):
                    outcome = Outcome(row.status)
                    result = DeliveryResult(outcome, response_code=row.response_code, reason=row.reason)
                    results.setdefault(row.message_id, []).append(result)
        outcomes = {}
        for row in rows:
            settled = results.get(row.id, [])
            reason = "; ".join(r.reason for r in settled if r.reason) if settled else row.error
            outcomes[row.id] = (Status(row.status), reason, settled)
        return outcomes

    def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Summaries matching ``query``, newest (highest id) first, at most ``query.limit``."""
        with store_errors("searching messages"), self._engine.connect() as connection:
            return [
                MessageSummary(**row._mapping)
                for row in connection.execute(self._page(query, *_SUMMARY_COLUMNS))
            ]

    def ids(self, query: MessageQuery) -> list[int]:
        """The ids of the messages matching ``query``, newest first, at most ``query.limit``."""
        with store_errors("searching messages"), self._engine.connect() as connection:
            return list(connection.execute(self._page(query, messages.c.id)).scalars())

    def _page(self, query: MessageQuery, *columns: sa.ColumnElement) -> sa.Select:
        """The SELECT of ``columns`` of the messages matching ``query``: newest first, one page."""
        searched = _index_for(query, self._index)
        statement = sa.select(*columns).where(*_criteria(dataclasses.replace(query, text=None), None))
        if query.before_id is not None:
            statement = statement.where(messages.c.id < query.before_id)
        if searched is not None:
            statement = searched.newest_matching(statement, messages.c.id, query_terms(query.text))
        else:
            statement = statement.order_by(messages.c.id.desc())
        return statement.limit(query.limit)

    def get(self, message_id: int) -> StoredMessage | None:
        """One message with its content, deliveries and status history, or None when there is no such id."""
        message = sa.select(*_STORED_COLUMNS).where(messages.c.id == message_id)
        routed = (
            sa.select(*_DELIVERY_COLUMNS)
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)
        )
        events = (
            sa.select(*_EVENT_COLUMNS)
            .where(message_events.c.message_id == message_id)
            .order_by(message_events.c.at, message_events.c.id)
        )
        with store_errors("reading a message"), self._engine.connect() as connection:
            row = connection.execute(message).one_or_none()
            if row is None:
                return None
            delivery_rows = tuple(
                DeliverySummary(**self._opened(delivery._mapping, deliveries))
                for delivery in connection.execute(routed)
            )
            history = tuple(MessageEvent(**event._mapping) for event in connection.execute(events))
        return StoredMessage(**self._opened(row._mapping, messages), deliveries=delivery_rows, events=history)

    def _opened(self, row: sa.RowMapping, table: sa.Table) -> dict:
        """A row of ``table`` as a dict, its sealed columns opened."""
        values = dict(row)
        for name, value in values.items():
            if table.c[name].info.get(SEALED):
                values[name] = self._cipher.open(value)
        return values

    def existing_ids(self, message_ids: Sequence[int]) -> set[int]:
        """Those of ``message_ids`` that name a stored message."""
        if not message_ids:
            return set()
        statement = sa.select(messages.c.id).where(messages.c.id.in_(list(message_ids)))
        with store_errors("looking up messages"), self._engine.connect() as connection:
            return set(connection.execute(statement).scalars())

    def channel_names(self) -> list[str]:
        """The channels of the stored messages, sorted (a channel no longer configured included)."""
        statement = sa.select(messages.c.channel).where(messages.c.channel.is_not(None)).distinct()
        with store_errors("listing channels"), self._engine.connect() as connection:
            return sorted(connection.execute(statement).scalars())

    def count(self, query: MessageQuery | None = None) -> int:
        """How many messages match ``query`` (all without one); ``limit`` and ``before_id`` are ignored."""
        statement = sa.select(sa.func.count()).select_from(messages)
        if query is not None:
            statement = statement.where(*_criteria(query, self._index))
        with store_errors("counting messages"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    def find_duplicate(
        self, sending_application: str, sending_facility: str, control_id: str, *, since: datetime
    ) -> tuple[int, bytes | None] | None:
        """The newest message not rejected, from that sender with that control id, since ``since``: (id, ACK).

        Received at or after ``since``; the ACK as bytes.
        """
        require_aware(since, "since")
        # Compare with the values as they were stored: without NULs and cut to their columns.
        key = fit_row(
            messages,
            {
                "sending_application": sending_application,
                "sending_facility": sending_facility,
                "control_id": control_id,
            },
        )
        m = messages.c
        statement = (
            sa.select(m.id, m.ack)
            .where(
                *(m[name] == value for name, value in key.items()),
                m.received_at >= since,
                m.status != Status.REJECTED,
            )
            .order_by(m.id.desc())
            .limit(1)
        )
        with store_errors("looking for a duplicate"), self._engine.connect() as connection:
            row = connection.execute(statement).one_or_none()
        return None if row is None else (row.id, self._cipher.open(row.ack))

    def unmoved_file(self, path: str, size: int, modified_ns: int) -> bool:
        """Whether this file (path, size, modification time) was stored and never moved away.

        That is a file a crash caught between its commit and its move; a file read and moved
        before, and dropped again, is not.
        """
        statement = sa.select(sa.exists().where(*_same_file(path, size, modified_ns)))
        with store_errors("looking up a source file"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    def file_moved(self, path: str, size: int, modified_ns: int, moved_to: str) -> None:
        """Record where a stored file went, once it was moved."""
        statement = (
            sa.update(source_files)
            .where(*_same_file(path, size, modified_ns))
            .values(fit_row(source_files, {"moved_to": moved_to}))
        )
        with store_errors("recording a moved source file"), self._engine.begin() as connection:
            connection.execute(statement)
