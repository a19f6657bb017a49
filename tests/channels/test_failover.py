"""Three nodes on one PostgreSQL store, one SIGKILLed mid-stream: another node takes over its work.

Three real engines (``python -m engine run``, one config with ``engine.cluster``) share one
database; senders spread over them (one message in flight per connection) and fail over to the
next node when theirs dies, resending what had no ACK. The node holding the first destination's
queue is killed once a third of the messages were acknowledged. Afterwards every acknowledged
message reached both partners, each partner got its messages in the store's delivery order, at
most one delivery per destination arrived twice (and the store marks it a possible duplicate),
and the killed node's queue moved to another node within a lease and a renewal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cluster

PROJECT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3.0
# Beyond a lease and a renewal: the poll that finds the free lease, a loaded 2-core machine.
SLACK_SECONDS = 3.0


@pytest.mark.postgres
def test_a_node_killed_mid_stream_loses_nothing_and_another_takes_over_within_a_lease(tmp_path, postgres_url):
    """600 messages on 3 nodes, the queue holder SIGKILLed after 200 ACKs: delivered in order, taken over."""
    # Senders paced so that the load lasts a few seconds, partners slower than intake: the kill comes
    # mid-intake, with a backlog in the queues, so a round of deliveries is in flight.
    plan = cluster.Plan(
        nodes=3,
        connections=6,
        per_connection=100,
        lease_seconds=LEASE_SECONDS,
        pace_seconds=0.03,
        answer_delay=0.01,
    )
    outcome = cluster.run(tmp_path, postgres_url, plan, PROJECT)
    summary = outcome.summary()
    print(summary)
    killed, report, tally = outcome.killed, outcome.report, outcome.tally
    within = LEASE_SECONDS + LEASE_SECONDS / 3 + SLACK_SECONDS

    assert tally.problems == [], summary
    assert report.acknowledged == plan.connections * plan.per_connection, summary
    assert tally.failovers >= 1, f"no sender noticed the kill\n{summary}"
    holder_before = outcome.held_before.get(cluster.queue_key("a"))
    assert holder_before == killed, f"the killed node held queue a\n{summary}"
    for destination in report.destinations:
        assert report.lost[destination.name] == [], summary
        assert len(destination.again) <= 1, summary
        assert destination.unmarked == [], summary
        assert destination.order_problem is None, summary
    lease_moved, first_delivery = outcome.lease_moved, report.destinations[0].first_after_kill
    assert lease_moved is not None and lease_moved < within, summary
    assert first_delivery is not None and first_delivery < within, summary
    holder_after = outcome.held_after.get(cluster.queue_key("a"))
    assert holder_after not in (None, killed), summary
