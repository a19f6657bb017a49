"""Reactors for tests that hand work to threads: a task.Clock whose thread pool runs the work inline, or
one whose threads hand their results back to the real reactor."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure


class InlinePool:
    """A thread pool that runs the work at once on the calling thread and counts it."""

    def __init__(self):
        self.calls = 0

    def callInThreadWithCallback(self, on_result, work, *args, **kwargs):
        self.calls += 1
        try:
            result = work(*args, **kwargs)
        except Exception:
            on_result(False, Failure())
        else:
            on_result(True, result)


class InlineThreads(Clock):
    """A reactor clock whose thread pool (``pool``) runs each call at once, on the calling thread.

    deferToThreadPool's Deferred has fired when it returns, so a test has no thread to wait for.
    """

    def __init__(self):
        super().__init__()
        self.pool = InlinePool()

    def getThreadPool(self) -> InlinePool:
        return self.pool

    def callFromThread(self, func, *args, **kwargs):
        func(*args, **kwargs)


class ClockedReactor(Clock):
    """A reactor whose time is a task.Clock, advanced by the test; threads hand results to ``reactor``.

    For code that times its work with callLater and seconds() while threads of its own answer
    through callFromThread: a test decides when time passes, however loaded the machine is.
    """

    def __init__(self, reactor):
        super().__init__()
        self._reactor = reactor

    def callFromThread(self, func, *args, **kwargs):
        self._reactor.callFromThread(func, *args, **kwargs)
