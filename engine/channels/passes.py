"""One pass at a time over durable work: what a channel's processing and a destination's queue share.

A pass reads work from the store and does it until none is left. ``notify()`` during a pass asks
for one more right after it; when nothing is left, the next look is scheduled (a timer the pass
may set itself, or the idle poll); when the store fails, a retry after ``STORE_RETRY_SECONDS``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from engine.errors import StoreError

__all__ = ["IDLE_POLL_SECONDS", "STORE_RETRY_SECONDS", "Passes"]

log = Logger()

#: How long to wait before trying again after the store itself failed.
STORE_RETRY_SECONDS = 1.0
#: How often an idle channel or dispatcher looks at the store anyway: work may come from another
#: process (an operator's resend or reprocess from the CLI, another engine node).
IDLE_POLL_SECONDS = 5.0


class Passes:
    """Runs ``run_pass`` one at a time, on notice and on schedule.

    Subclasses give ``run_pass`` and ``describe``.
    """

    def __init__(self, reactor, *, idle_poll: float = IDLE_POLL_SECONDS):
        """``idle_poll``: seconds between looks at the store while idle (work from other processes)."""
        self.reactor = reactor
        self.idle_poll = idle_poll
        self._running = False
        self._again = False
        self._stopped = False
        self._timer = None
        self._idle: list[defer.Deferred] = []

    @property
    def stopped(self) -> bool:
        """True once ``stop_passes`` was called: no pass starts any more."""
        return self._stopped

    def describe(self) -> str:
        """Who runs the passes, for logs (``channel adt``)."""
        raise NotImplementedError

    def run_pass(self) -> defer.Deferred:
        """Do the work that is waiting; fires when none is left (or errbacks, e.g. with a StoreError)."""
        raise NotImplementedError

    def notify(self) -> None:
        """Work may be waiting: run a pass now, or right after the one under way."""
        if self._stopped:
            return
        if self._running:
            self._again = True
            return
        self._cancel_timer()
        self._running = True
        self.run_pass().addBoth(self._pass_done)

    def look_again_in(self, seconds: float) -> None:
        """Run a pass in ``seconds`` (unless stopped), instead of the idle poll."""
        if not self._stopped:
            self._cancel_timer()
            self._timer = self.reactor.callLater(seconds, self.notify)

    def stop_passes(self) -> defer.Deferred:
        """Stop scheduling passes; fires once the pass under way (if any) is over."""
        self._stopped = True
        self._cancel_timer()
        if not self._running:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _pass_done(self, result) -> None:
        self._running = False
        if isinstance(result, defer.Failure):
            if result.check(StoreError):
                log.warn(
                    "{what}: store unavailable ({error}); retrying",
                    what=self.describe(),
                    error=result.getErrorMessage(),
                )
            else:
                log.failure("{what}: pass failed", result, what=self.describe())
            self.look_again_in(STORE_RETRY_SECONDS)
        elif self._again:
            self._again = False
            self.notify()
        elif self._timer is None or not self._timer.active():
            self.look_again_in(self.idle_poll)
        if not self._running:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
