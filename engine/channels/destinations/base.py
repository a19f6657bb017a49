"""What every destination is: started, stopped, handed one delivery or a run of them.

A dispatcher hands each round of due deliveries to ``send_run``; the class says how long a round
may be (``round_size``) and whether the dispatcher stops it before or after the round under way
(``stop_before_pass``). Subclasses give ``send``, and override ``send_run`` when they do better
with a whole run than one send after another. Whatever sends, ``send_run`` notes each delivery in
the queue's journal before it can reach the partner, and its answer once it came
(``journal.py``): so after a crash at most the one delivery in flight goes twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet import defer

from engine.channels.journal import NO_JOURNAL, Journal
from engine.model import Delivery, Outcome

__all__ = ["Destination"]


class Destination:
    """Where a channel sends messages: MLLP, file, HTTP, another channel, the patient record."""

    #: Deliveries a dispatcher round hands to ``send_run`` at most. A round's read and its one write
    #: of the attempts cost the same for one message or many. A batch (the record's one writer call,
    #: a file's one envelope) stays this small: the record's call holds the store's write lock,
    #: which intake waits behind.
    round_size = 100
    #: True when ``stop()`` itself ends a run after the message in flight (the dispatcher stops the
    #: destination first, then waits for its round); otherwise the dispatcher waits for the round
    #: to end, then stops the destination.
    stop_before_pass = False

    def __init__(self, name: str):
        self.name = name

    def start(self) -> None:
        """Open what needs opening (connections are opened lazily, on first send)."""

    def stop(self) -> defer.Deferred:
        """Close connections; fires when closed."""
        return defer.succeed(None)

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Fires with a DeliveryResult; never errbacks (a failure is a RETRY or ERROR result)."""
        raise NotImplementedError

    @defer.inlineCallbacks
    def send_run(
        self,
        deliveries: Sequence[Delivery],
        *,
        stop_at_failure: bool,
        stopped: Callable[[], bool] | None = None,
        journal: Journal = NO_JOURNAL,
    ):
        """Send the deliveries in order; fires with the results of those attempted, never errbacks.

        With ``stop_at_failure`` none is sent after the first that is not SENT; once ``stopped()``
        is true (the dispatcher is stopping) none is sent after the one under way. So the results
        may be fewer than the deliveries: the rest were not attempted. Each delivery is noted in
        ``journal`` before it is sent, its answer after; a delivery the journal cannot note is not
        sent (RETRY) and ends the run.
        """
        results = []
        for delivery in deliveries:
            refused = yield journal.from_reactor(journal.note_sending, delivery)
            if refused is not None:
                results.append(refused)
                break
            result = yield self.send(delivery)
            journal.answered(delivery, result)
            results.append(result)
            if (result.outcome != Outcome.SENT and stop_at_failure) or (stopped is not None and stopped()):
                break
        yield journal.from_reactor(journal.flush)
        return results
