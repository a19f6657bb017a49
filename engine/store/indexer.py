"""The content index kept up to date: a batch of new messages indexed on the writer at a time.

Splitting a message into words costs CPU (tens of microseconds), and the engine's process is one
interpreter: an index that kept up with any rate would take that CPU from intake at saturation.
So a round indexes at most ``per_round`` messages (by default 1,000 a second): under a burst
faster than that the index falls behind, intake does not, and the index catches up once the
traffic is below it (docs/performance.md, "Search by content").

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
    """Indexes new messages every ``every`` seconds, ``batch`` a writer call, until none is left or
    ``per_round`` are done."""

    what = "indexing content"
    log = log

    def __init__(
        self,
        store: MessageStore,
        *,
        reactor,
        every: float = 1.0,
        batch: int = 100,
        per_round: int = 1000,
        may_run: Callable[[], bool] = lambda: True,
    ):
        """``may_run()``: whether this process indexes now (with several, the one holding the jobs' lease)."""
        super().__init__(reactor=reactor, every=every, may_run=may_run)
        self._store = store
        self._batch = batch
        self._per_round = per_round

    @defer.inlineCallbacks
    def run_once(self):
        """Index batches until one comes back short (nothing left for now) or ``per_round`` messages are
        done; fires with how many messages."""
        total = 0
        while not self._stopping and total < self._per_round:
            done = yield self._store.index_pending(min(self._batch, self._per_round - total))
            total += done
            if done < self._batch:
                break
        return total
