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
from engine.store.jobs import RepeatedJob
from engine.store.message_store import MessageStore
from engine.store.retention import Pruned, PruneSummary, PruneTarget, RetentionPolicy, RetentionRepository

__all__ = ["Pruner"]

log = Logger(namespace="engine.store.retention")


class Pruner(RepeatedJob):
    """Prunes by the policy every ``every`` seconds while started; one run at a time."""

    what = "pruning"
    log = log

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
        super().__init__(reactor=reactor, every=every, may_run=may_run)
        self._store = store
        self._policy = policy
        self._batch = batch
        self._clock = clock

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
