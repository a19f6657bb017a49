"""The message store: a blocking repository, and the engine's asynchronous face over it.

``MessageRepository`` does the SQL and returns plain frozen dataclasses; it blocks, so it runs on
threads (and in the CLI). ``MessageStore`` is what the reactor talks to: ``add()`` queues
messages for one writer thread that commits everything pending in one transaction (group
commit) and fires each caller's Deferred after COMMIT; reads run on a small thread pool.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from engine.errors import StoreError
from engine.store.db import create_engine_for, store_errors
from engine.store.migrations import upgrade
from engine.store.schema import message_events, messages, require_aware

log = Logger(namespace="engine.store")


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message to store, as the intake saw it; field names are the ``messages`` columns."""

    raw: bytes
    received_at: datetime  # aware; stored in UTC
    listener: str
    peer: str
    status: str  # Status.RECEIVED or Status.REJECTED at intake
    channel: str | None = None
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""
    trigger_event: str = ""
    message_structure: str = ""
    control_id: str = ""
    version: str = ""
    processing_id: str = ""
    charset: str = ""
    ack_code: str = ""  # the code we answered (AA, AE, AR, CA, CE, CR), '' for no answer
    ack: bytes | None = None  # the ACK bytes we answered with
    error: str = ""  # why it was rejected
    batch_control_id: str | None = None
    batch_index: int | None = None


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """Search criteria (all given ones must match, exactly) and a page: newest first, ids below ``before_id``."""

    control_id: str | None = None
    message_type: str | None = None  # "ADT", "ADT^A01" or "ADT^A01^ADT_A01"; an empty component matches any
    sending_application: str | None = None
    sending_facility: str | None = None
    status: str | None = None
    channel: str | None = None
    listener: str | None = None
    since: datetime | None = None  # received_at >= since
    until: datetime | None = None  # received_at < until
    limit: int = 100
    before_id: int | None = None

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None:
                require_aware(moment, name)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A stored message without its content: what a list of messages shows."""

    id: int
    received_at: datetime
    listener: str
    channel: str | None
    peer: str
    status: str
    sending_application: str
    sending_facility: str
    message_code: str
    trigger_event: str
    control_id: str
    version: str
    ack_code: str
    error: str

    @property
    def message_type(self) -> str:
        """MSH-9 as operators write it: ``ADT^A01`` (``ADT`` when there is no trigger event)."""
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    def to_json_dict(self) -> dict:
        """The summary as JSON-ready values: ``type`` is message_type, ``received_at`` ISO 8601."""
        return {
            "id": self.id,
            "channel": self.channel,
            "control_id": self.control_id,
            "type": self.message_type,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "listener": self.listener,
            "peer": self.peer,
            "sending_application": self.sending_application,
            "sending_facility": self.sending_facility,
            "message_code": self.message_code,
            "trigger_event": self.trigger_event,
            "version": self.version,
            "ack_code": self.ack_code,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One later status change of a stored message."""

    id: int
    at: datetime
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class StoredMessage(MessageSummary):
    """A stored message with its content, the ACK we answered with and its status history."""

    raw: bytes
    ack: bytes | None
    receiving_application: str
    receiving_facility: str
    message_structure: str
    processing_id: str
    charset: str
    batch_control_id: str | None
    batch_index: int | None
    events: tuple[MessageEvent, ...]

    @property
    def summary(self) -> MessageSummary:
        """Just the summary part, e.g. to print it like a search result."""
        return MessageSummary(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MessageSummary)})


_NEW_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(NewMessage))
_SUMMARY_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(MessageSummary))
_STORED_COLUMNS = tuple(messages.c[f.name] for f in dataclasses.fields(StoredMessage) if f.name != "events")
_EVENT_COLUMNS = tuple(message_events.c[f.name] for f in dataclasses.fields(MessageEvent))
# Header columns are search copies of MSH fields (raw keeps every byte), so a value that does
# not fit is cut rather than refused: refusing would make a sender resend it forever.
_TEXT_LIMITS = {c.name: c.type.length for c in messages.c if isinstance(c.type, sa.String) and c.type.length}
_TEXT_COLUMNS = frozenset(c.name for c in messages.c if isinstance(c.type, sa.String))
_INSERT = sa.insert(messages).returning(messages.c.id, sort_by_parameter_order=True)


def _row(message: NewMessage) -> dict:
    """The column values for one message; text loses NULs (PostgreSQL refuses them) and is cut to fit."""
    row = {name: getattr(message, name) for name in _NEW_MESSAGE_FIELDS}
    for name in _TEXT_COLUMNS:
        value = row[name]
        if value is not None:
            row[name] = value.replace("\x00", "")[: _TEXT_LIMITS.get(name)]
    row["status_at"] = message.received_at
    return row


def _criteria(query: MessageQuery) -> list[sa.ColumnElement[bool]]:
    c = messages.c
    equal = (
        (c.control_id, query.control_id),
        (c.sending_application, query.sending_application),
        (c.sending_facility, query.sending_facility),
        (c.status, query.status),
        (c.channel, query.channel),
        (c.listener, query.listener),
    )
    criteria = [column == value for column, value in equal if value is not None]
    if query.message_type is not None:
        parts = query.message_type.split("^")
        type_columns = (c.message_code, c.trigger_event, c.message_structure)
        criteria += [column == part for column, part in zip(type_columns, parts) if part]
    if query.since is not None:
        criteria.append(c.received_at >= query.since)
    if query.until is not None:
        criteria.append(c.received_at < query.until)
    return criteria


class MessageRepository:
    """Blocking reads and writes of stored messages, returning plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the repository uses."""
        return self._engine

    def insert(self, new_messages: Sequence[NewMessage]) -> list[int]:
        """Store the messages in one transaction; returns their ids in the same order."""
        if not new_messages:
            return []
        rows = [_row(m) for m in new_messages]
        with store_errors("storing messages"):
            # TRANSACTION: every message given, committed together or not at all (one group commit).
            with self._engine.begin() as connection:
                return list(connection.execute(_INSERT, rows).scalars())

    def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Summaries matching ``query``, newest (highest id) first, at most ``query.limit``."""
        statement = sa.select(*_SUMMARY_COLUMNS).where(*_criteria(query))
        if query.before_id is not None:
            statement = statement.where(messages.c.id < query.before_id)
        statement = statement.order_by(messages.c.id.desc()).limit(query.limit)
        with store_errors("searching messages"), self._engine.connect() as connection:
            return [MessageSummary(**row._mapping) for row in connection.execute(statement)]

    def get(self, message_id: int) -> StoredMessage | None:
        """One message with its content and status history, or None when there is no such id."""
        message = sa.select(*_STORED_COLUMNS).where(messages.c.id == message_id)
        events = sa.select(*_EVENT_COLUMNS).where(message_events.c.message_id == message_id).order_by(message_events.c.at, message_events.c.id)
        with store_errors("reading a message"), self._engine.connect() as connection:
            row = connection.execute(message).one_or_none()
            if row is None:
                return None
            history = tuple(MessageEvent(**event._mapping) for event in connection.execute(events))
        return StoredMessage(**row._mapping, events=history)

    def count(self, query: MessageQuery | None = None) -> int:
        """How many messages match ``query`` (all of them without one); ``limit`` and ``before_id`` are ignored."""
        statement = sa.select(sa.func.count()).select_from(messages)
        if query is not None:
            statement = statement.where(*_criteria(query))
        with store_errors("counting messages"), self._engine.connect() as connection:
            return connection.execute(statement).scalar_one()


@dataclass(slots=True)
class _PendingAdd:
    messages: tuple[NewMessage, ...]
    deferred: defer.Deferred


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class MessageStore:
    """The engine's message store: group-committed writes on one thread, reads on a pool, results as Deferreds."""

    def __init__(self, url: str, *, reactor, durability: str = "process", lock_timeout: float = 5.0, max_batch: int = 500, read_threads: int = 4):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if read_threads < 1:
            raise ValueError(f"read_threads must be at least 1, not {read_threads}")
        self._url = url
        self._reactor = reactor
        self._durability = durability
        self._lock_timeout = lock_timeout
        self._max_batch = max_batch
        self._read_threads = read_threads
        self._state = _State.NEW
        self._pending: collections.deque[_PendingAdd] = collections.deque()
        self._wakeup = threading.Condition()
        self._stop_waiters: list[defer.Deferred] = []
        self._repository: MessageRepository | None = None
        self._reads: ThreadPool | None = None

    @property
    def repository(self) -> MessageRepository:
        """The blocking repository underneath (for threads and tools); exists once started."""
        if self._repository is None:
            raise StoreError("the message store has not been started")
        return self._repository

    def start(self) -> None:
        """Connect, upgrade the schema to head and start the threads; blocks while migrating, so call it at startup."""
        if self._state is not _State.NEW:
            raise StoreError(f"the message store cannot start: it is {self._state.value}")
        # The writer and every reader may each hold a connection at once.
        engine = create_engine_for(self._url, durability=self._durability, lock_timeout=self._lock_timeout, pool_size=self._read_threads + 1)
        try:
            upgrade(engine)
        except StoreError:
            engine.dispose()
            raise
        self._repository = MessageRepository(engine)
        self._reads = ThreadPool(minthreads=0, maxthreads=self._read_threads, name="hl7engine-store-read")
        self._reads.start()
        writer = threading.Thread(target=self._write_until_stopped, name="hl7engine-store-writer", daemon=True)
        self._state = _State.RUNNING
        writer.start()

    def stop(self) -> defer.Deferred:
        """Commit every add() already made, then stop the threads; fires with None once done. Idempotent."""
        if self._state is _State.NEW:
            self._state = _State.STOPPED
        if self._state is _State.STOPPED:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._stop_waiters.append(waiter)
        if self._state is _State.RUNNING:
            with self._wakeup:
                self._state = _State.STOPPING
                self._wakeup.notify()
        return waiter

    def add(self, new_messages: Sequence[NewMessage]) -> defer.Deferred:
        """Store the messages in one transaction; fires with their ids after COMMIT, or fails with StoreError."""
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        batch = tuple(new_messages)
        if not batch:
            return defer.succeed([])
        pending = _PendingAdd(batch, defer.Deferred())
        with self._wakeup:
            self._pending.append(pending)
            self._wakeup.notify()
        return pending.deferred

    def search(self, query: MessageQuery) -> defer.Deferred:
        """Fires with MessageRepository.search(query)."""
        return self._read(MessageRepository.search, query)

    def get(self, message_id: int) -> defer.Deferred:
        """Fires with MessageRepository.get(message_id)."""
        return self._read(MessageRepository.get, message_id)

    def count(self, query: MessageQuery | None = None) -> defer.Deferred:
        """Fires with MessageRepository.count(query)."""
        return self._read(MessageRepository.count, query)

    def _read(self, method, *args) -> defer.Deferred:
        # Once stopping, the pool may already be shut down and would silently drop the call.
        if self._state is not _State.RUNNING:
            return defer.fail(StoreError(f"the message store is {self._state.value}, not running"))
        return deferToThreadPool(self._reactor, self._reads, method, self._repository, *args)

    # Everything below runs on the writer thread.

    def _write_until_stopped(self) -> None:
        try:
            while (group := self._next_group()) is not None:
                self._write(group)
            self._reads.stop()  # runs the reads already queued, then joins the threads
            self._repository.engine.dispose()
        finally:
            self._reactor.callFromThread(self._stopped)

    def _next_group(self) -> list[_PendingAdd] | None:
        """Wait for work and take every pending add that fits in max_batch (at least one); None to exit."""
        with self._wakeup:
            while not self._pending and self._state is _State.RUNNING:
                self._wakeup.wait()
            if not self._pending:
                return None
            group = [self._pending.popleft()]
            size = len(group[0].messages)
            while self._pending and size + len(self._pending[0].messages) <= self._max_batch:
                size += len(self._pending[0].messages)
                group.append(self._pending.popleft())
            return group

    def _write(self, group: list[_PendingAdd]) -> None:
        """Commit the group in one transaction and fire each add's Deferred; never raises."""
        try:
            ids = self._repository.insert([m for pending in group for m in pending.messages])
        except Exception as error:  # whatever happens, the writer lives on to serve the next group
            failure = _as_store_error(error)
            if len(group) > 1 and _may_be_one_add(failure):
                # One add's rows may be at fault: give every add its own transaction so the rest commit.
                for pending in group:
                    self._write([pending])
                return
            log.warn("storing {count} messages failed: {error}", count=sum(len(p.messages) for p in group), error=str(failure))
            for pending in group:
                self._reactor.callFromThread(pending.deferred.errback, failure)
            return
        start = 0
        for pending in group:
            end = start + len(pending.messages)
            self._reactor.callFromThread(pending.deferred.callback, ids[start:end])
            start = end

    def _stopped(self) -> None:
        self._state = _State.STOPPED
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _as_store_error(error: Exception) -> StoreError:
    """``error`` itself when it is a StoreError, else a StoreError caused by it (a bug, but the add must fail)."""
    if isinstance(error, StoreError):
        return error
    wrapped = StoreError(f"storing messages failed: {error!r}")
    wrapped.__cause__ = error
    return wrapped


def _may_be_one_add(error: StoreError) -> bool:
    """Whether a failed group is worth retrying add by add: not when the database itself is locked or unreachable."""
    return not error.locked and not isinstance(error.__cause__, (sa_exc.OperationalError, sa_exc.InterfaceError))
