"""The content index kept up to date: a batch of new messages indexed on the writer at a time.

Intake stores a message and answers; its words are indexed here, shortly after, in batches
(``MessageRepository.index_pending``): off intake's path, and a batch of hundreds written in one
transaction costs a fraction of an index written with each group commit (docs/performance.md).
A content search finds a message once its batch committed, within ``every`` seconds of its
arrival while the indexer keeps up. After an upgrade to the index (revision 0019) the messages
stored before are indexed the same way, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

from engine.store.message_store import MessageStore

__all__ = ["ContentIndexer"]

log = Logger(namespace="engine.store.indexer")


class ContentIndexer:
    """Indexes new messages every ``every`` seconds, ``batch`` a writer call, until none is left."""

    def __init__(
        self,
        store: MessageStore,
        *,
        reactor,
        every: float = 1.0,
        batch: int = 500,
        may_run: Callable[[], bool] = lambda: True,
    ):
        """``may_run()``: whether this process indexes now (with several, the one holding the jobs' lease)."""
        self._store = store
        self._reactor = reactor
        self._every = every
        self._batch = batch
        self._may_run = may_run
        self._next = None
        self._running: defer.Deferred | None = None
        self._stopping = False

    def start(self) -> None:
        """Index now, then ``every`` seconds after each round ends."""
        self._stopping = False
        self._next = self._reactor.callLater(0, self._round)

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

    def _round(self) -> None:
        self._next = None
        self._running = self.run_once() if self._may_run() else defer.succeed(0)
        self._running.addErrback(self._failed)
        self._running.addBoth(self._ran)

    def _ran(self, _result) -> None:
        self._running = None
        if not self._stopping:
            self._next = self._reactor.callLater(self._every, self._round)

    def _failed(self, failure) -> None:
        if not self._stopping:
            log.warn(
                "indexing content failed, next try in {every} s: {error}",
                every=self._every,
                error=str(failure.value),
            )

    @defer.inlineCallbacks
    def run_once(self):
        """Index batches until one comes back short (nothing left for now); fires with how many messages."""
        total = 0
        while not self._stopping:
            done = yield self._store.index_pending(self._batch)
            total += done
            if done < self._batch:
                break
        return total
