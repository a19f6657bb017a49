"""LogRate: one line per key and interval, every event counted."""

from __future__ import annotations

from engine.lograte import LogRate


def test_one_line_per_interval_and_key_standing_for_every_event():
    now = [100.0]
    rate = LogRate(10.0, lambda: now[0])
    assert rate.due("a") == 1  # the first event of a key is logged at once
    assert [rate.due("a") for _ in range(5)] == [None] * 5
    assert rate.due("b") == 1  # another key has its own interval
    now[0] += 9.9
    assert rate.due("a") is None
    now[0] += 0.1
    assert rate.due("a") == 7  # the 6 left out since the last line, and this one
    assert rate.due("a") is None
    now[0] += 60
    assert rate.due("a") == 2
    assert rate.due() == 1  # no key: one stream of its own
