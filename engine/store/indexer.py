"""The content index kept up to date: a batch of new messages indexed on the writer at a time.

Intake stores a message and answers; its words are indexed here, shortly after, in batches
(``MessageRepository.index_pending``): off intake's path, and a batch of hundreds written in one
transaction costs a fraction of an index written with each group commit (docs/performance.md).
A content search finds a message once its batch committed, within ``every`` seconds of its
arrival while the indexer keeps up. After an upgrade to the index (revision 0022) the messages
stored before are indexed the same way, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

from engine.store.jobs import RepeatedJob
from engine.store.message_store import MessageStore

__all__ = ["ContentIndexer"]

log = Logger(namespace="engine.store.indexer")


class ContentIndexer(RepeatedJob):
    """Indexes new messages every ``every`` seconds, ``batch`` a writer call, until none is left."""

    what = "indexing content"
    log = log

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
        super().__init__(reactor=reactor, every=every, may_run=may_run)
        self._store = store
        self._batch = batch

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
