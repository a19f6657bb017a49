"""The engine's retention schedule: every ``prune_every_seconds``, prune a batch at a time on the writer.

Each batch is one call on the store's writer thread (``MessageStore.write``), in order with the
intake's commits: a message waits for one batch at most, never for a whole prune. The reactor
thread only chains the calls. The freed pages then go back to the file system (SQLite), a step
at a time, and the run is written to the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.internet import defer
from twisted.logger import Logger

from engine.model import utc_now
from engine.store.audit import AuditRepository
from engine.store.message_store import MessageStore
from engine.store.retention import Pruned, PruneSummary, PruneTarget, RetentionPolicy, RetentionRepository

__all__ = ["Pruner"]

log = Logger(namespace="engine.store.retention")


class Pruner:
    """Prunes by the policy every ``every`` seconds while started; one run at a time."""

    def __init__(
        self,
        store: MessageStore,
        policy: Callable[[], RetentionPolicy],
        *,
        reactor,
        every: float,
        batch: int,
        clock: Callable[[], datetime] = utc_now,
        may_run: Callable[[], bool] = lambda: True,
    ):
        """``may_run()``: whether this process prunes now (with several, the one holding the job's lease)."""
        self._store = store
        self._may_run = may_run
        self._policy = policy
        self._reactor = reactor
        self._every = every
        self._batch = batch
        self._clock = clock
        self._next = None  # the pending callLater of the next run
        self._running: defer.Deferred | None = None
        self._stopping = False

    def start(self) -> None:
        """Run first ``every`` seconds from now, then every ``every`` seconds after each run ends."""
        self._stopping = False
        self._schedule()

    def stop(self) -> defer.Deferred:
        """No new batch; fires once the batch in hand (if any) has committed."""
        self._stopping = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._running is None:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._running.addBoth(lambda result: waiter.callback(None) or result)
        return waiter

    def _schedule(self) -> None:
        if not self._stopping:
            self._next = self._reactor.callLater(self._every, self._start_run)

    def _start_run(self) -> None:
        self._next = None
        if not self._may_run():  # another process prunes this store: look again at the next run
            self._schedule()
            return
        self._running = self.run_once()
        self._running.addErrback(self._failed)
        self._running.addBoth(self._ran)

    def _ran(self, _result) -> None:
        self._running = None
        self._schedule()

    def _failed(self, failure) -> None:
        if not self._stopping:  # a store that stops under a run refuses its next batch: not a failure
            log.warn(
                "pruning failed, next try in {every} s: {error}", every=self._every, error=str(failure.value)
            )

    @defer.inlineCallbacks
    def run_once(self):
        """Prune what the policy says is due now, a batch per writer call; fires with a PruneSummary."""
        policy = self._policy()
        done: list[tuple[PruneTarget, Pruned]] = []
        # Rows of engine processes gone for a week (worker processes, nodes) go with each run.
        yield self._store.prune_nodes()
        if not policy.prunes_anything:
            return PruneSummary(False, ())
        engine = self._store.repository.engine
        retention = RetentionRepository(engine, clock=self._clock)
        for target in (yield self._store.read(retention.targets, policy)):
            so_far = Pruned()
            while not self._stopping:
                batch = yield self._store.write(retention.prune_batch, target, limit=self._batch)
                so_far += batch
                if batch.messages < self._batch:
                    break
            done.append((target, so_far))
        summary = PruneSummary(False, tuple(done))
        if self._stopping:  # the store stops too: it takes no more calls
            return summary
        # Every free page, those of a run a stop cut short included.
        for _ in range((yield self._store.read(retention.give_back_steps, self._batch))):
            if self._stopping:
                break
            if (yield self._store.write(retention.give_back_space, self._batch)) < self._batch:
                break
        if summary.total.messages:
            yield self._store.write(
                AuditRepository(engine, clock=self._clock).record,
                user="engine",
                action="prune",
                remote="",
                detail=summary.audit_detail,
            )
            log.info(
                "retention pruned {count} message(s), {size} bytes of content",
                count=summary.total.messages,
                size=summary.total.content_bytes,
            )
        return summary
