"""Rate of repeated log lines: a flood of the same event (refused connections, empty frames, a store
that fails every write while its disk is full) is counted in full but logged at most once per interval.

Without it, a peer or a fault that repeats an event thousands of times a second fills the log (and the
disk it is on) with one line each. The metrics count every event; the log says how many it left out.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

__all__ = ["LogRate"]


class LogRate:
    """At most one log line per key and ``seconds``; ``due`` counts every event in between."""

    def __init__(self, seconds: float, clock: Callable[[], float]):
        self.seconds = seconds
        self._clock = clock
        self._logged_at: dict[Hashable, float] = {}
        self._events: dict[Hashable, int] = {}

    def due(self, key: Hashable = None) -> int | None:
        """Count one event of ``key``; when a line is due now, how many events it stands for (this one
        included, those not logged since the last line of ``key`` too), else None."""
        events = self._events.get(key, 0) + 1
        now = self._clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < self.seconds:
            self._events[key] = events
            return None
        self._logged_at[key], self._events[key] = now, 0
        return events
