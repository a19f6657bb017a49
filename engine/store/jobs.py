"""A store job run again and again on the reactor: one run at a time, the next ``every`` s after it ends."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

__all__ = ["RepeatedJob"]


class RepeatedJob:
    """Calls ``run_once()`` (a Deferred) ``every`` seconds after each run ends, while started.

    ``may_run()`` says whether this process runs the job now (with several, the one holding the
    jobs' lease); when not, it asks again at the next run. A failed run is logged (``what`` names
    the job), and the next one comes as usual.
    """

    what = "a store job"
    log = Logger(namespace="engine.store")

    def __init__(self, *, reactor, every: float, may_run: Callable[[], bool] = lambda: True):
        self._reactor = reactor
        self._every = every
        self._may_run = may_run
        self._next = None  # the pending callLater of the next run
        self._running: defer.Deferred | None = None
        self._stopping = False

    def run_once(self) -> defer.Deferred:
        """One run of the job; overridden."""
        raise NotImplementedError

    def start(self, *, first_after: float | None = None) -> None:
        """Run first ``first_after`` seconds from now (``every`` by default), then after each run."""
        self._stopping = False
        self._next = self._reactor.callLater(
            self._every if first_after is None else first_after, self._start_run
        )

    def stop(self) -> defer.Deferred:
        """No new run; fires once the run in hand (if any) has ended."""
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
        if not self._may_run():
            self._schedule()
            return
        self._running = self.run_once()
        self._running.addErrback(self._failed)
        self._running.addBoth(self._ran)

    def _ran(self, _result) -> None:
        self._running = None
        self._schedule()

    def _failed(self, failure) -> None:
        if not self._stopping:  # a store that stops under a run refuses its next call: not a failure
            self.log.warn(
                "{what} failed, next try in {every} s: {error}",
                what=self.what,
                every=self._every,
                error=str(failure.value),
            )
