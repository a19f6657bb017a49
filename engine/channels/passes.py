"""One pass at a time over durable work: what a channel's processing and a destination's queue share.

A pass reads work from the store and does it until none is left. ``notify()`` during a pass asks
for one more right after it; when nothing is left, the next look is scheduled (a timer the pass
may set itself, or the idle poll); when the store fails, a retry after ``STORE_RETRY_SECONDS``.
Passes are paused while this process does not hold the work's lease (``pause_passes``,
``resume_passes``), held while an operator paused the work (``hold_passes``, ``release_passes``),
and stopped for good when their owner closes (``stop_passes``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet import defer
from twisted.logger import Logger

from engine.channels.leases import LOCAL_LEASES, Leases
from engine.errors import LeaseLost, StoreError

__all__ = ["IDLE_POLL_SECONDS", "STORE_RETRY_SECONDS", "Passes"]

log = Logger()

#: How long to wait before trying again after the store itself failed.
STORE_RETRY_SECONDS = 1.0
#: How often an idle channel or dispatcher looks at the store anyway: work may come from another
#: process (an operator's resend or reprocess from the CLI, another engine node).
IDLE_POLL_SECONDS = 5.0


class Passes:
    """Runs ``run_pass`` one at a time, on notice and on schedule.

    Subclasses give ``run_pass`` and ``describe``. ``key`` names the work: a pass goes on only while
    ``leases`` says this process holds it.
    """

    def __init__(
        self,
        reactor,
        *,
        leases: Leases = LOCAL_LEASES,
        key: str = "",
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ):
        """``idle_poll_seconds``: how often to look when idle (less when other processes share the store)."""
        self.reactor = reactor
        self.leases = leases
        self.key = key
        self.idle_poll_seconds = idle_poll_seconds
        self._running = False
        self._again = False
        self._stopped = False
        self._paused = False
        self._held = False
        self._timer = None
        self._idle: list[defer.Deferred] = []
        self._unsubscribe: list[Callable[[], None]] = []

    @property
    def stopped(self) -> bool:
        """True while no pass may start: once ``stop_passes`` was called, or while paused or held."""
        return self._stopped or self._paused or self._held

    @property
    def held(self) -> bool:
        """True while an operator's pause holds the passes back (``hold_passes``)."""
        return self._held

    @property
    def closed(self) -> bool:
        """True once ``stop_passes`` was called: the owner closed for good (a pause is not a close)."""
        return self._stopped

    @property
    def may_work(self) -> bool:
        """Whether a pass may go on: not stopped nor paused, and the work's lease still held.

        A lease expires by this process's reckoning before its loss is told (``lost``, which
        pauses): a pass under way stops at the next step all the same, so it sends no more.
        """
        return not self.stopped and self.leases.holds(self.key)

    def describe(self) -> str:
        """Who runs the passes, for logs (``channel adt``)."""
        raise NotImplementedError

    def run_pass(self) -> defer.Deferred:
        """Do the work that is waiting; fires when none is left (or errbacks, e.g. with a StoreError)."""
        raise NotImplementedError

    def notify(self) -> None:
        """Work may be waiting: run a pass now, or right after the one under way."""
        if self.stopped:
            return
        if self._running:
            self._again = True
            return
        self._cancel_timer()
        self._running = True
        self.run_pass().addBoth(self._pass_done)

    def work_under_lease(self, wakeups, heard: Mapping[str, Callable[[], None]]) -> None:
        """Start paused and watch ``key``: ``lease_acquired`` once held, ``lease_lost`` when lost.

        Meanwhile each wake-up key of ``heard`` calls its function (when there are ``wakeups``, the
        process's ``Wakeups``; None for an engine alone on its store).
        """
        if wakeups is not None:
            self._unsubscribe = [wakeups.on_key(key, then) for key, then in heard.items()]
        self.pause_passes()
        self.leases.watch(self.key, self.lease_acquired, self.lease_lost)

    def stop_hearing(self) -> None:
        """No more wake-ups: the first step of closing."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def lease_acquired(self) -> None:
        """The lease of ``key`` is held: passes may start."""
        self.resume_passes()

    def lease_lost(self) -> defer.Deferred:
        """The lease of ``key`` is lost: fires once the pass under way ended."""
        return self.pause_passes()

    def look_again_in(self, seconds: float) -> None:
        """Run a pass in ``seconds`` (unless stopped), instead of the idle poll."""
        if not self.stopped:
            self._cancel_timer()
            self._timer = self.reactor.callLater(seconds, self.notify)

    def stop_passes(self) -> defer.Deferred:
        """Stop scheduling passes for good; fires once the pass under way (if any) is over."""
        self._stopped = True
        return self._pass_over()

    def pause_passes(self) -> defer.Deferred:
        """Start no pass until ``resume_passes`` (the lease was lost); fires once the pass under way ends."""
        self._paused = True
        return self._pass_over()

    def resume_passes(self) -> None:
        """Passes may start again (the lease is held): one starts now, unless stopped for good."""
        self._paused = False
        self.notify()

    def hold_passes(self) -> defer.Deferred:
        """Start no pass until ``release_passes`` (an operator paused the work); fires once the pass ends."""
        self._held = True
        return self._pass_over()

    def release_passes(self) -> None:
        """The operator's pause is over: a pass starts now, unless paused or stopped otherwise."""
        self._held = False
        self.notify()

    def _pass_over(self) -> defer.Deferred:
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
            if result.check(LeaseLost):
                log.info(
                    "{what}: this process no longer holds the work ({error})",
                    what=self.describe(),
                    error=result.getErrorMessage(),
                )
            elif result.check(StoreError):
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
            self.look_again_in(self.idle_poll_seconds)
        if not self._running:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)
