"""engine.channels.passes: one pass at a time, another on notice, the idle poll and the store retry."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.channels.passes import IDLE_POLL_SECONDS, STORE_RETRY_SECONDS, Passes
from engine.errors import StoreError


class Recorder(Passes):
    """Passes that the test finishes by hand: each ``run_pass`` waits in ``open`` until fired."""

    def __init__(self, reactor):
        super().__init__(reactor)
        self.open: list[defer.Deferred] = []
        self.started = 0

    def describe(self) -> str:
        return "test passes"

    def run_pass(self) -> defer.Deferred:
        self.started += 1
        self.open.append(defer.Deferred())
        return self.open[-1]

    def finish(self, result=None) -> None:
        self.open.pop(0).callback(result)


def test_a_notice_during_a_pass_asks_for_exactly_one_more_right_after_it():
    """notify() while a pass runs does not start another; however many notices came, one pass follows it."""
    passes = Recorder(Clock())
    passes.notify()
    passes.notify()
    passes.notify()
    assert passes.started == 1
    passes.finish()
    assert passes.started == 2
    passes.finish()
    assert passes.started == 2


@pytest.mark.parametrize(
    ("result", "look_again_in"),
    [(None, IDLE_POLL_SECONDS), (defer.Failure(StoreError("down")), STORE_RETRY_SECONDS)],
    ids=["idle: the idle poll", "the store failed: a retry"],
)
def test_after_a_pass_the_next_comes_on_schedule(result, look_again_in):
    """After an idle pass the next comes IDLE_POLL_SECONDS later; after a failed one, STORE_RETRY_SECONDS."""
    reactor = Clock()
    passes = Recorder(reactor)
    passes.notify()
    passes.finish(result)
    reactor.advance(look_again_in - 0.01)
    assert passes.started == 1
    reactor.advance(0.01)
    assert passes.started == 2


def test_a_timer_set_by_the_pass_replaces_the_idle_poll():
    """look_again_in() during a pass sets when the next one comes (a retry due sooner than the idle poll)."""
    reactor = Clock()
    passes = Recorder(reactor)
    passes.notify()
    passes.look_again_in(0.5)
    passes.finish()
    reactor.advance(0.5)
    assert passes.started == 2


def test_stopping_waits_for_the_pass_under_way_and_starts_no_other():
    """stop_passes() fires once the pass under way is over; no notice or timer starts one after it."""
    reactor = Clock()
    passes = Recorder(reactor)
    passes.notify()
    stopped = passes.stop_passes()
    passes.notify()
    assert not stopped.called and passes.stopped
    passes.finish()
    assert stopped.called
    reactor.advance(IDLE_POLL_SECONDS)
    passes.notify()
    assert passes.started == 1 and reactor.getDelayedCalls() == []


def test_a_paused_pass_ends_its_work_starts_none_until_resumed_and_then_one_at_once():
    """pause_passes fires once the pass under way ends; no notice or timer starts one; resume starts one."""
    reactor = Clock()
    passes = Recorder(reactor)
    passes.notify()
    paused = passes.pause_passes()
    assert not paused.called and passes.stopped and not passes.may_work
    passes.notify()
    passes.finish()
    assert paused.called
    reactor.advance(IDLE_POLL_SECONDS * 2)
    assert passes.started == 1
    passes.resume_passes()
    assert passes.started == 2 and passes.may_work
    passes.stop_passes()
    passes.resume_passes()  # stopped for good: a resume starts nothing
    passes.finish()
    assert passes.started == 2 and passes.stopped
