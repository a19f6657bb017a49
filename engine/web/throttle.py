"""Login rate limits: failed password checks counted per user name and per client address.

A check that is still running counts as a failure until it is known to have succeeded, so a
burst of requests sent at once cannot slip more guesses past the limit than one at a time. Over
a limit the password is not checked at all: the caller answers 429 with ``retry_after``.
Names that do not exist are limited like those that do, so the answers tell no names apart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import EngineError

__all__ = ["LoginAttempt", "LoginThrottle", "LoginThrottled"]

# Keys remembered at most (user names and addresses): a flood of made-up names must not grow
# the process without bound. Past it the oldest keys are forgotten first.
MAX_KEYS = 10_000


class LoginThrottled(EngineError):
    """Too many failed logins for this user name or from this address; try again in ``retry_after`` s.

    ``first``: the first refusal of this lockout (log it; the rest are only counted).
    """

    def __init__(self, limit: str, retry_after: int, *, first: bool):
        self.limit = limit  # "user" or "address"
        self.retry_after = retry_after
        self.first = first
        super().__init__(f"too many failed logins for this {limit}; try again in {retry_after} s")


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A password check admitted by the throttle, to be settled when its answer is known."""

    keys: tuple[tuple[str, str], ...]


class LoginThrottle:
    """At most ``per_user`` failures per user name and ``per_address`` per address in ``window`` seconds."""

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window: float,
        clock: Callable[[], float],
        max_keys: int = MAX_KEYS,
    ):
        self.limits = {"user": per_user, "address": per_address}
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._announced: dict[tuple[str, str], float] = {}  # lockouts already logged, until when

    @property
    def tracked(self) -> int:
        """How many user names and addresses have failures remembered (at most about ``max_keys``)."""
        return len(self._failures)

    def admit(self, user: str, address: str) -> LoginAttempt:
        """Admit one password check, or raise LoginThrottled."""
        now = self._clock()
        if len(self._announced) > self._max_keys:
            self._forget(now)
        keys = (("user", user), ("address", address))
        for key in keys:
            failures = self._recent(key, now)
            if len(failures) + self._running.get(key, 0) >= self.limits[key[0]]:
                # Only checks still running: they end within a second or so.
                until = failures[0] + self.window if failures else now + 1.0
                announced = self._announced.get(key, -math.inf)
                first = announced <= now  # no lockout of this key is going on already
                self._announced[key] = max(announced, until)
                raise LoginThrottled(key[0], max(1, math.ceil(until - now)), first=first)
        for key in keys:
            self._running[key] = self._running.get(key, 0) + 1
        return LoginAttempt(keys)

    def settle(self, attempt: LoginAttempt, *, matched: bool) -> None:
        """Record the answer of an admitted check: a failure counts; a success forgets the user's failures."""
        now = self._clock()
        self.cancel(attempt)
        for key in attempt.keys:
            if not matched:
                self._failures.setdefault(key, deque()).append(now)
            elif key[0] == "user":
                self._failures.pop(key, None)
        if len(self._failures) > self._max_keys:
            self._forget(now)

    def cancel(self, attempt: LoginAttempt) -> None:
        """Forget an admitted check that was not made after all: it counts neither way."""
        for key in attempt.keys:
            running = self._running.pop(key, 0) - 1
            if running > 0:
                self._running[key] = running

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def _forget(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        self._announced = {key: until for key, until in self._announced.items() if until > now}
        excess = len(self._failures) - self._max_keys
        for key in list(self._failures)[: max(0, excess)]:  # oldest first: dicts keep insertion order
            del self._failures[key]
