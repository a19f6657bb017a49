"""The engine's asynchronous face over the whole store: every repository's method, returning a Deferred.

``MessageStore`` is what the reactor talks to. It starts the store (engine, schema upgrade,
repositories) and runs each repository method on the store's threads (``pool.py``): writes on
the one writer thread (``writer_lane.py``), intake's adds first and group-committed, reads on the
read pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from twisted.internet import defer

from engine.errors import StoreError
from engine.model import AttemptResult, LeaseToken, NewMessage, ProcessingResult, SourceFile, utc_now
from engine.store.cipher import CLEAR, Cipher
from engine.store.cluster import ClusterRepository
from engine.store.configs import ConfigRepository
from engine.store.db import create_engine_for
from engine.store.defaults import DEFAULT_LEASE_SECONDS, WAL_MAX_BYTES
from engine.store.leases import LeaseRepository
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.pool import State, StorePool
from engine.store.queues import QueueRepository
from engine.store.reads import MessageQuery

# A dispatcher's round of attempts, on SQLite, is recorded in transactions of at most this many:
# with --workers, intake's commits wait for a worker's transaction that holds the file's lock, and
# one of 50 held it 5-7 ms on a busy machine (25: 3.5-4.5 ms, for 20-30 % more CPU an attempt).
ATTEMPTS_PER_WRITE = 25


class MessageStore:
    """The engine's store: each repository method run on the store's threads (StorePool), as a Deferred."""

    def __init__(
        self,
        url: str,
        *,
        reactor,
        durability: str = "process",
        lock_timeout: float = 5.0,
        max_batch: int = 500,
        read_threads: int = 4,
        wal_max_bytes: int = WAL_MAX_BYTES,
        clock: Callable[[], datetime] = utc_now,
        cipher: Cipher = CLEAR,
        shared: bool = False,
        ahead: bool = False,
    ):
        """``cipher`` seals content at rest (engine.store.cipher); CLEAR seals nothing.

        ``shared``: other processes of the engine write the same SQLite file (``hl7engine run
        --workers``): the writers take turns at its lock (engine.store.writelock). ``ahead``: this
        process's writes of that file go before those of the processes without it (intake's).
        """
        self._pool = StorePool(
            reactor=reactor,
            durability=durability,
            max_batch=max_batch,
            read_threads=read_threads,
            wal_max_bytes=wal_max_bytes,
            lock_timeout=lock_timeout,
            shared=shared,
            ahead=ahead,
        )
        self._ahead = ahead
        self._url = url
        self._durability = durability
        self._lock_timeout = lock_timeout
        self._wal_max_bytes = wal_max_bytes
        self._clock = clock
        self._cipher = cipher
        self._repository: MessageRepository | None = None
        self._queues: QueueRepository | None = None
        self._configs: ConfigRepository | None = None
        self._cluster: ClusterRepository | None = None
        self._leases: LeaseRepository | None = None

    @property
    def ahead(self) -> bool:
        """Whether this process's writes of a shared SQLite file go before those of the others (intake's)."""
        return self._ahead

    @property
    def repository(self) -> MessageRepository:
        """The blocking message repository underneath (for threads and tools); exists once started."""
        if self._repository is None:
            raise StoreError("the message store has not been started")
        return self._repository

    @property
    def queues(self) -> QueueRepository:
        """The blocking queue repository underneath (for threads and tools); exists once started."""
        if self._queues is None:
            raise StoreError("the message store has not been started")
        return self._queues

    @property
    def configs(self) -> ConfigRepository:
        """The blocking config history repository underneath (for threads and tools); exists once started."""
        if self._configs is None:
            raise StoreError("the message store has not been started")
        return self._configs

    @property
    def cluster(self) -> ClusterRepository:
        """The blocking reader of the nodes and their leases (for threads and tools); exists once started."""
        if self._cluster is None:
            raise StoreError("the message store has not been started")
        return self._cluster

    @property
    def record_apart(self) -> bool:
        """Whether the record's writes never hold up intake's: SQLite with its own file (once started)."""
        return self._pool.record_apart

    @property
    def cipher(self) -> Cipher:
        """The cipher the store seals and opens content with; ``rotate`` it to apply new keys."""
        return self._cipher

    def start(self) -> None:
        """Connect, upgrade the schema and start the threads; it blocks to migrate, so call it at startup."""
        if self._pool.state is not State.NEW:
            raise StoreError(f"the message store cannot start: it is {self._pool.state.value}")
        engine = create_engine_for(
            self._url,
            durability=self._durability,
            lock_timeout=self._lock_timeout,
            pool_size=self._pool.connections(self._url),
            cipher=self._cipher,
            wal_max_bytes=self._wal_max_bytes,
            autocheckpoint=False,  # the pool's writer checkpoints, outside any transaction
        )
        try:
            upgrade(engine)
        except StoreError:
            engine.dispose()
            raise
        self._repository = MessageRepository(engine, clock=self._clock)
        self._queues = QueueRepository(engine, clock=self._clock)
        self._configs = ConfigRepository(engine)
        self._cluster = ClusterRepository(engine, clock=self._clock)
        self._leases = LeaseRepository(engine)
        self._pool.start(engine, self._repository.insert_groups)

    def wait_for_senders(self, idle_senders: Callable[[], int]) -> None:
        """Let inline groups wait a moment for idle connected senders (StorePool.wait_for_senders)."""
        self._pool.wait_for_senders(idle_senders)

    def stop(self) -> defer.Deferred:
        """Commit every write asked for, then stop the threads; fires with None once done (idempotent)."""
        return self._pool.stop()

    # Writes: each goes to the writer thread and fires after COMMIT.

    def add(
        self, new_messages: Sequence[NewMessage], source_file: SourceFile | None = None
    ) -> defer.Deferred:
        """Store the messages (and their source file) in one transaction; fires with the ids after COMMIT."""
        return self._pool.add(new_messages, source_file)

    def file_moved(self, path: str, size: int, modified_ns: int, moved_to: str) -> defer.Deferred:
        """Fires with None once MessageRepository.file_moved(...) committed: where a stored file went."""
        return self._pool.write(
            MessageRepository.file_moved, self._repository, path, size, modified_ns, moved_to
        )

    def record_answer(self, message_id: int, ack_code: str, ack: bytes) -> defer.Deferred:
        """Fires with None once MessageRepository.record_answer(...) committed."""
        return self._pool.write(MessageRepository.record_answer, self._repository, message_id, ack_code, ack)

    def record_processing(
        self, results: Sequence[ProcessingResult], lease: LeaseToken | None = None
    ) -> defer.Deferred:
        """Fires with QueueRepository.record_processing(results, lease): the new delivery ids."""
        return self._pool.write(QueueRepository.record_processing, self._queues, tuple(results), lease)

    def record_attempts(
        self, results: Sequence[AttemptResult], lease: LeaseToken | None = None
    ) -> defer.Deferred:
        """Fires with None once QueueRepository.record_attempts(results, lease) committed.

        On SQLite (one writer at a time) a round of more than ATTEMPTS_PER_WRITE goes in writes of
        that many, queued together, so that received messages commit between them instead of after
        the whole round. A write that fails fails the Deferred (with its StoreError), the others
        may have committed: the caller records the round again from its journal, and an attempt
        replayed with its number is never counted twice. Each write is fenced by ``lease``.
        """
        results = tuple(results)
        if self._repository.engine.dialect.name != "sqlite" or len(results) <= ATTEMPTS_PER_WRITE:
            return self._pool.write(QueueRepository.record_attempts, self._queues, results, lease)
        step = ATTEMPTS_PER_WRITE
        writes = [
            self._pool.write(QueueRepository.record_attempts, self._queues, results[i : i + step], lease)
            for i in range(0, len(results), step)
        ]
        return defer.gatherResults(writes, consumeErrors=True).addCallbacks(
            lambda _: None, lambda failure: failure.value.subFailure
        )

    def resend(self, message_ids: Sequence[int], *, destination: str | None = None) -> defer.Deferred:
        """Fires with QueueRepository.resend(message_ids, destination=destination): the new delivery ids."""
        return self._pool.write(
            QueueRepository.resend, self._queues, tuple(message_ids), destination=destination
        )

    def reprocess(self, message_ids: Sequence[int]) -> defer.Deferred:
        """Fires with QueueRepository.reprocess(message_ids): how many messages go back to RECEIVED."""
        return self._pool.write(QueueRepository.reprocess, self._queues, tuple(message_ids))

    def record_config(
        self,
        *,
        applied_at: datetime,
        source: str,
        content: str,
        sha256: str,
        changes: str,
        inputs: Sequence[Mapping[str, str]] = (),
    ) -> defer.Deferred:
        """Fires with ConfigRepository.record_config(...): the record's id."""
        return self._pool.write(
            ConfigRepository.record_config,
            self._configs,
            applied_at=applied_at,
            source=source,
            content=content,
            sha256=sha256,
            changes=changes,
            inputs=tuple(inputs),
        )

    @defer.inlineCallbacks
    def index_pending(self, limit: int = 500):
        """Fires with how many messages it indexed: their words are read and split on a reader
        thread, only their rows written on the writer (which intake's commits wait for)."""
        ids, terms = yield self._pool.read(MessageRepository.pending_terms, self._repository, limit)
        done = yield self._pool.write(MessageRepository.add_terms, self._repository, ids, terms)
        return done

    def prune_nodes(self) -> defer.Deferred:
        """Fires with ClusterRepository.prune_nodes(): how many long-gone nodes were forgotten."""
        return self._pool.write(ClusterRepository.prune_nodes, self._cluster)

    # Nodes and leases (LeaseRepository): writes on the writer thread, reads on the read pool.

    def register_node(
        self, name: str, host: str, pid: int, roles: Sequence[str], wake_address: str | None, now: datetime
    ) -> defer.Deferred:
        """Fires with LeaseRepository.register_node(...): this process's node id."""
        return self._pool.write(
            LeaseRepository.register_node, self._leases, name, host, pid, tuple(roles), wake_address, now
        )

    def heartbeat(self, node_id: int, now: datetime) -> defer.Deferred:
        """Fires with None once LeaseRepository.heartbeat(node_id, now) committed."""
        return self._pool.write(LeaseRepository.heartbeat, self._leases, node_id, now)

    def node_stopped(self, node_id: int, now: datetime) -> defer.Deferred:
        """Fires with None once LeaseRepository.node_stopped(node_id, now) committed."""
        return self._pool.write(LeaseRepository.node_stopped, self._leases, node_id, now)

    def ensure_lease_keys(self, keys: Sequence[str]) -> defer.Deferred:
        """Fires with None once LeaseRepository.ensure_keys(keys) committed."""
        return self._pool.write(LeaseRepository.ensure_keys, self._leases, tuple(keys))

    def claim_leases(
        self, node_id: int, keys: Sequence[str], n: int, now: datetime, expires_at: datetime
    ) -> defer.Deferred:
        """Fires with LeaseRepository.claim(...): the LeaseTokens taken."""
        return self._pool.write(LeaseRepository.claim, self._leases, node_id, tuple(keys), n, now, expires_at)

    def renew_leases(
        self, node_id: int, tokens: Sequence[LeaseToken], expires_at: datetime
    ) -> defer.Deferred:
        """Fires with LeaseRepository.renew(...): the LeaseTokens still held."""
        return self._pool.write(LeaseRepository.renew, self._leases, node_id, tuple(tokens), expires_at)

    def release_leases(self, tokens: Sequence[LeaseToken]) -> defer.Deferred:
        """Fires with None once LeaseRepository.release(tokens) committed."""
        return self._pool.write(LeaseRepository.release, self._leases, tuple(tokens))

    def live_nodes(self, now: datetime, lease_seconds: float) -> defer.Deferred:
        """Fires with LeaseRepository.live_nodes(now, lease_seconds): LiveNode values."""
        return self._pool.read(LeaseRepository.live_nodes, self._leases, now, lease_seconds)

    # Reads: each runs on the read pool.

    def search(self, query: MessageQuery) -> defer.Deferred:
        """Fires with MessageRepository.search(query)."""
        return self._pool.read(MessageRepository.search, self._repository, query)

    def ids(self, query: MessageQuery) -> defer.Deferred:
        """Fires with MessageRepository.ids(query)."""
        return self._pool.read(MessageRepository.ids, self._repository, query)

    def get(self, message_id: int) -> defer.Deferred:
        """Fires with MessageRepository.get(message_id)."""
        return self._pool.read(MessageRepository.get, self._repository, message_id)

    def count(self, query: MessageQuery | None = None) -> defer.Deferred:
        """Fires with MessageRepository.count(query)."""
        return self._pool.read(MessageRepository.count, self._repository, query)

    def find_duplicate(
        self, sending_application: str, sending_facility: str, control_id: str, *, since: datetime
    ) -> defer.Deferred:
        """Fires with MessageRepository.find_duplicate(...): (id, ACK bytes) or None."""
        return self._pool.read(
            MessageRepository.find_duplicate,
            self._repository,
            sending_application,
            sending_facility,
            control_id,
            since=since,
        )

    def outcomes(self, message_ids: Sequence[int]) -> defer.Deferred:
        """Fires with MessageRepository.outcomes(message_ids): {id: (status, reason, results)}."""
        return self._pool.read(MessageRepository.outcomes, self._repository, tuple(message_ids))

    def unmoved_file(self, path: str, size: int, modified_ns: int) -> defer.Deferred:
        """Fires with MessageRepository.unmoved_file(path, size, modified_ns)."""
        return self._pool.read(MessageRepository.unmoved_file, self._repository, path, size, modified_ns)

    def pending_for_processing(self, channel: str, *, after_id: int = 0, limit: int = 500) -> defer.Deferred:
        """Fires with QueueRepository.pending_for_processing(...): ReceivedMessage values, oldest first."""
        return self._pool.read(
            QueueRepository.pending_for_processing, self._queues, channel, after_id=after_id, limit=limit
        )

    def due_deliveries(
        self, channel: str, destination: str, *, now: datetime, limit: int, head_only: bool
    ) -> defer.Deferred:
        """Fires with QueueRepository.due_deliveries(...): Delivery values in queue order."""
        return self._pool.read(
            QueueRepository.due_deliveries,
            self._queues,
            channel,
            destination,
            now=now,
            limit=limit,
            head_only=head_only,
        )

    def next_due_at(self, channel: str, destination: str, *, head_only: bool = False) -> defer.Deferred:
        """Fires with QueueRepository.next_due_at(...): a datetime or None."""
        return self._pool.read(
            QueueRepository.next_due_at, self._queues, channel, destination, head_only=head_only
        )

    def queue_depth(self, channel: str, destination: str) -> defer.Deferred:
        """Fires with QueueRepository.queue_depth(channel, destination)."""
        return self._pool.read(QueueRepository.queue_depth, self._queues, channel, destination)

    def queue_depths(self) -> defer.Deferred:
        """Fires with QueueRepository.queue_depths(): {(channel, destination): depth}."""
        return self._pool.read(QueueRepository.queue_depths, self._queues)

    def config_history(self, limit: int = 20, *, before_id: int | None = None) -> defer.Deferred:
        """Fires with ConfigRepository.config_history(limit, before_id=): newest first."""
        return self._pool.read(ConfigRepository.config_history, self._configs, limit, before_id=before_id)

    def config_record(self, record_id: int) -> defer.Deferred:
        """Fires with ConfigRepository.config_record(record_id): one applied configuration, or None."""
        return self._pool.read(ConfigRepository.config_record, self._configs, record_id)

    def cluster_view(self, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> defer.Deferred:
        """Fires with ClusterRepository.view(lease_seconds=...): the nodes and every lease, now."""
        return self._pool.read(ClusterRepository.view, self._cluster, lease_seconds=lease_seconds)

    def write(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the single writer thread, in order with every other write.

        For writes beside the messages' (sessions, controls, the audit trail): on SQLite the store's
        file has one writer at a time. Errors arrive as StoreError.
        """
        return self._pool.write(function, *args, **kwargs)

    def write_record(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)``, which writes the patient record's tables and no others.

        On SQLite the record has a file (and a write lock) of its own, and its writes a thread of
        their own (engine.store.record_lane), in order: they never hold up intake's commits. On
        PostgreSQL it is ``write``. Errors arrive as StoreError.
        """
        return self._pool.write_record(function, *args, **kwargs)

    def read(self, function: Callable[..., Any], *args, **kwargs) -> defer.Deferred:
        """Run ``function(*args, **kwargs)`` on the read pool; errors arrive as StoreError."""
        return self._pool.read(function, *args, **kwargs)
