"""engine.channels.destinations.base: a run is sent one by one unless the destination does better."""

from __future__ import annotations

from twisted.internet import defer

from engine.channels.destinations.base import Destination
from engine.model import Delivery, DeliveryResult, Outcome


class Scripted(Destination):
    """Answers each send with the next outcome; notes the control ids sent."""

    def __init__(self, *outcomes: Outcome):
        super().__init__("out")
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def send(self, delivery: Delivery) -> defer.Deferred:
        self.sent.append(delivery.control_id)
        return defer.succeed(DeliveryResult(self.outcomes.pop(0)))


def run(n: int) -> list[Delivery]:
    return [Delivery(i, i, "adt", "out", f"C{i}", b"MSH|", 1) for i in range(1, n + 1)]


def outcomes(d: defer.Deferred) -> list[Outcome]:
    return [r.outcome for r in d.result]


def test_a_run_is_sent_in_order_and_stops_at_the_first_failure_when_asked():
    """With stop_at_failure nothing is sent after the first result that is not SENT; without, all are."""
    stopping = Scripted(Outcome.SENT, Outcome.RETRY, Outcome.SENT)
    assert outcomes(stopping.send_run(run(3), stop_at_failure=True)) == [Outcome.SENT, Outcome.RETRY]
    assert stopping.sent == ["C1", "C2"]
    going_on = Scripted(Outcome.SENT, Outcome.ERROR, Outcome.SENT)
    assert outcomes(going_on.send_run(run(3), stop_at_failure=False)) == [
        Outcome.SENT,
        Outcome.ERROR,
        Outcome.SENT,
    ]


def test_a_run_ends_after_the_send_under_way_once_stopped():
    """Once stopped() is true (the dispatcher is stopping) no further send of the run starts."""
    destination = Scripted(Outcome.SENT, Outcome.SENT, Outcome.SENT)
    stops = iter([False, True])
    results = destination.send_run(run(3), stop_at_failure=False, stopped=lambda: next(stops))
    assert outcomes(results) == [Outcome.SENT, Outcome.SENT] and destination.sent == ["C1", "C2"]


def test_the_defaults_open_and_close_nothing_and_take_rounds_of_100():
    """A destination without its own start/stop starts and stops at once.

    Rounds of 100, stopped after its round.
    """
    destination = Scripted()
    destination.start()
    assert destination.stop().called
    assert (destination.round_size, destination.stop_before_pass) == (100, False)
