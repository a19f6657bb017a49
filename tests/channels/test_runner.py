"""Retry policy and queue behaviour of the channel runner and its dispatchers."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from engine.channels.runner import RetryPolicy
from engine.store.messages import MessageQuery
from tests.channels.destinations.downstream import Downstream, reply
from tests.channels.test_channels_e2e import adt, config_for, free_port, mllp_channel, send, start, statuses, wait_until
from tests.fakes.harness import in_thread


def test_backoff_is_exponential_and_capped():
    """Without jitter the delay doubles from the initial value and stops at the cap."""
    policy = RetryPolicy(initial_seconds=1, max_seconds=10, multiplier=2, jitter=0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("attempt", [1, 3, 8])
def test_jitter_stays_within_its_fraction(attempt):
    """With jitter j every delay lies within base * (1 ± j), and the delays are not all equal."""
    policy = RetryPolicy(initial_seconds=1, max_seconds=100, multiplier=2, jitter=0.2)
    rng = random.Random(attempt)
    base = min(100, 2 ** (attempt - 1))
    delays = [policy.delay(attempt, rng) for _ in range(200)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert len(set(delays)) > 100


def test_giving_up_by_attempts_or_age():
    """A delivery is given up after max_attempts, or once older than max_age_seconds; None means never."""
    assert RetryPolicy(max_attempts=3).gives_up(3, 0)
    assert not RetryPolicy(max_attempts=3).gives_up(2, 0)
    assert RetryPolicy(max_attempts=None, max_age_seconds=60).gives_up(50, 61)
    assert not RetryPolicy(max_attempts=None, max_age_seconds=None).gives_up(10_000, 10**9)


@pytest_twisted.inlineCallbacks
def test_a_partner_that_stays_down_ends_in_error_after_max_attempts(tmp_path):
    """With max_attempts 3 and nobody listening, the delivery ends in ERROR saying it gave up after 3 attempts."""
    queue = """
        queue:
          retry_initial_seconds: 0.02
          retry_jitter: 0
          max_attempts: 3
"""
    engine = start(config_for(tmp_path, mllp_channel(free_port(), queue=queue)))
    try:
        yield in_thread(send, engine.listeners["main"].port, [adt(1)])
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR"}))
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        message = yield engine.store.get(rows[0].id)
        assert message.deliveries[0].attempts == 3
        assert "gave up after 3 attempt(s)" in message.deliveries[0].reason
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_skip_lets_later_messages_pass_a_failing_one(tmp_path):
    """on_error: skip sends the next message while the failed one waits for its retry."""
    downstream = Downstream()
    port = downstream.start()
    queue = """
        queue:
          on_error: skip
          retry_initial_seconds: 0.5
          retry_jitter: 0
"""
    engine = start(config_for(tmp_path, mllp_channel(port, queue=queue)))
    try:
        downstream.script(reply("AR", 207), reply("AA"), reply("AA"))
        yield in_thread(send, engine.listeners["main"].port, [adt(1), adt(2)])
        yield wait_until(lambda: len(downstream.received) >= 3)
        assert [p.split(b"|")[9] for p in downstream.received[:3]] == [b"C0001", b"C0002", b"C0001"]
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "SENT", "C0002": "SENT"}))
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_a_transform_error_puts_the_message_in_error_and_the_channel_goes_on(tmp_path):
    """A failing transform sends that message to ERROR with the transform's path; the next message is processed."""
    channels = """
  - name: strict
    source: main
    accept: {types: ["*"]}
    transforms:
      - map: {field: PV1-3.1, table: wards, on_miss: error}
"""
    tables = """
tables:
  wards: {inline: {"4N": "NORTH-4"}}
"""
    engine = start(config_for(tmp_path, channels, tables=tables))
    try:
        unknown_ward = adt(1).replace(b"PV1|1|O|4N", b"PV1|1|O|7W")
        replies = yield in_thread(send, engine.listeners["main"].port, [unknown_ward, adt(2)])
        assert [r.code for r in replies] == ["AA", "AA"]  # after_store: the sender only learns it was stored
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: s == {"C0001": "ERROR", "C0002": "TRANSFORMED"}))
        rows = yield engine.store.search(MessageQuery(control_id="C0001"))
        assert "channels[0].transforms[0]" in rows[0].error and "7W" in rows[0].error
        yield deferLater(reactor, 0, lambda: None)
    finally:
        yield engine.stopService()
