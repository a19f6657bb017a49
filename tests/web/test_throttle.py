"""engine/web/throttle.py: failed logins counted per user name and per address in a sliding window."""

from __future__ import annotations

import pytest

from engine.web.throttle import LoginThrottle, LoginThrottled


class _Clock:
    """Seconds that a test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, user: str, address: str, times: int = 1) -> None:
    """``times`` admitted checks that failed."""
    for _ in range(times):
        throttle.settle(throttle.admit(user, address), matched=False)


def refused(throttle: LoginThrottle, user: str, address: str) -> LoginThrottled:
    with pytest.raises(LoginThrottled) as caught:
        throttle.admit(user, address)
    return caught.value


def test_a_user_is_refused_after_its_failures_from_any_address():
    """per_user failures lock the name from every address until the oldest leaves the window."""
    clock = _Clock()
    throttle = LoginThrottle(per_user=3, per_address=100, window=60.0, clock=clock)
    fail(throttle, "alice", "10.0.0.1", 2)
    clock.now += 10
    fail(throttle, "alice", "10.0.0.2")
    over = refused(throttle, "alice", "10.0.0.3")
    assert (over.limit, over.retry_after, over.first) == ("user", 50, True)
    assert refused(throttle, "alice", "10.0.0.1").first is False  # the lockout was announced once
    throttle.settle(throttle.admit("bob", "10.0.0.1"), matched=True)  # another name is not affected
    clock.now += 50
    throttle.admit("alice", "10.0.0.3")  # the two oldest failures left the window


def test_an_address_is_refused_after_its_failures_with_any_names():
    """per_address failures, whatever the names tried, lock the address; other addresses go on."""
    clock = _Clock()
    throttle = LoginThrottle(per_user=100, per_address=4, window=300.0, clock=clock)
    for n in range(4):
        fail(throttle, f"guess{n}", "10.0.0.9")
    over = refused(throttle, "alice", "10.0.0.9")
    assert (over.limit, over.retry_after) == ("address", 300)
    throttle.admit("alice", "10.0.0.10")


def test_checks_still_running_count_until_they_succeed():
    """A burst admitted at once cannot pass the limit: running checks count; success frees the user."""
    clock = _Clock()
    throttle = LoginThrottle(per_user=2, per_address=100, window=60.0, clock=clock)
    first = throttle.admit("alice", "10.0.0.1")
    second = throttle.admit("alice", "10.0.0.1")
    burst = [refused(throttle, "alice", "10.0.0.1") for _ in range(3)]
    assert [(over.retry_after, over.first) for over in burst] == [(1, True), (1, False), (1, False)]
    throttle.settle(first, matched=False)
    throttle.settle(second, matched=True)  # a right password forgets the user's failures
    throttle.cancel(throttle.admit("alice", "10.0.0.1"))  # a check not made counts neither way
    fail(throttle, "alice", "10.0.0.1")
    throttle.admit("alice", "10.0.0.1")


def test_memory_is_bounded_under_a_flood_of_names():
    """Made-up names from many addresses never hold more than max_keys keys; the oldest are forgotten."""
    clock = _Clock()
    throttle = LoginThrottle(per_user=3, per_address=3, window=600.0, clock=clock, max_keys=100)
    for n in range(1000):
        fail(throttle, f"name{n}", f"10.0.{n // 250}.{n % 250}")
    assert throttle.tracked <= 101
