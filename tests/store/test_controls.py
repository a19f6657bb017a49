"""engine.store.controls and engine.store.dashboard: pauses, a halted queue's resume, alert states, counts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest_twisted

from engine.model import AttemptResult, NewDelivery, Outcome, Status, utc_now
from engine.store.controls import AlertState, ControlRepository
from engine.store.dashboard import DashboardRepository
from engine.store.reads import WHOLE_CHANNEL
from engine.store.schema import message_events
from tests.fakes.channels import message_row
from tests.fakes.harness import in_thread
from tests.fakes.store import rows_of


@pytest_twisted.inlineCallbacks
def _three_queued_one_sent_one_failed(store):
    """Messages 1..3 of adt queued for emr two minutes ago; 1 SENT, 2 ERROR (AE), 3 still QUEUED."""
    received = utc_now() - timedelta(minutes=2)
    rows = [
        dataclasses.replace(
            message_row(n, deliveries=(NewDelivery("emr", Status.QUEUED, f"C{n:04d}", b"MSH|"),)),
            received_at=received,
        )
        for n in (1, 2, 3)
    ]
    yield store.add(rows)
    due = yield store.due_deliveries("adt", "emr", now=utc_now(), limit=10, head_only=False)
    now = utc_now()
    yield store.record_attempts(
        [
            AttemptResult(due[0].delivery_id, Outcome.SENT, now, response_code="AA"),
            AttemptResult(
                due[1].delivery_id, Outcome.ERROR, now, response_code="AE", reason="AE: application error"
            ),
        ]
    )
    return [d.delivery_id for d in due]


@pytest_twisted.inlineCallbacks
def test_counts_over_a_window_and_each_queue_now(open_store):
    """The window counts messages by status and settled deliveries; each queue: depth, head, last error."""
    store = open_store()
    yield _three_queued_one_sent_one_failed(store)
    dashboard = DashboardRepository(store.repository.engine)

    counts = yield in_thread(
        dashboard.counts, utc_now() - timedelta(minutes=5), [("adt", "emr"), ("adt", "idle")]
    )

    assert counts.listeners == {"main": 3}
    assert counts.channels == {"adt": {Status.SENT: 1, Status.ERROR: 1, Status.QUEUED: 1}}
    assert counts.channels_queued == {"adt": 1}
    emr = counts.queues[("adt", "emr")]
    assert (emr.depth, emr.head_attempts, emr.last_error) == (1, 0, "AE: application error")
    assert emr.settled == {Status.SENT: 1, Status.ERROR: 1}
    assert emr.oldest_queued_at is not None
    assert counts.queues[("adt", "idle")].depth == 0

    later = yield in_thread(dashboard.counts, utc_now() + timedelta(minutes=1), [("adt", "emr")])
    assert later.listeners == {} and later.queues[("adt", "emr")].settled == {}  # outside the window
    assert later.queues[("adt", "emr")].depth == 1  # the queue now, whatever the window


@pytest_twisted.inlineCallbacks
def test_resuming_a_halted_queue_puts_its_delivery_back_at_the_head(open_store):
    """Resume removes the halt and queues the ERROR delivery again in place: due before the one behind it."""
    store = open_store()
    ids = yield _three_queued_one_sent_one_failed(store)
    controls = ControlRepository(store.repository.engine)

    assert (yield in_thread(controls.halt, "adt", "emr", ids[1], "AE: application error")) is True
    assert (yield in_thread(controls.pause, "adt", "emr", by="alice")) is False  # paused already
    [pause] = yield in_thread(controls.pauses)
    assert (pause.paused_by, pause.halted_delivery) == ("on_error: halt", ids[1])

    resumed = yield in_thread(controls.resume, "adt", "emr")
    assert resumed == pause
    assert (yield in_thread(controls.pauses)) == []
    due = yield store.due_deliveries("adt", "emr", now=utc_now(), limit=10, head_only=True)
    assert [d.delivery_id for d in due] == [ids[1], ids[2]]
    stored = yield store.get(due[0].message_id)
    assert stored.status == Status.QUEUED and stored.error == ""
    details = [detail for (detail,) in rows_of(store.repository.engine, message_events.c.detail)]
    assert details.count("queue resumed by operator: the delivery it halted at is retried first") == 2
    assert (yield in_thread(controls.resume, "adt", "emr")) is None  # nothing left to resume


@pytest_twisted.inlineCallbacks
def test_a_channel_pause_and_alert_states_are_kept(open_store):
    """A whole channel's pause is its own row; an alert state is replaced, never doubled."""
    store = open_store()
    controls = ControlRepository(store.repository.engine)
    yield in_thread(controls.pause, "adt", WHOLE_CHANNEL, by="cli:ops", reason="maintenance")
    yield in_thread(controls.pause, "adt", "emr", by="alice")
    pauses = yield in_thread(controls.pauses)
    assert [(p.channel, p.destination, p.paused_by, p.reason) for p in pauses] == [
        ("adt", "", "cli:ops", "maintenance"),
        ("adt", "emr", "alice", ""),
    ]

    now = utc_now()
    yield in_thread(controls.set_alert_state, AlertState("emr-down", True, "down", now, None))
    yield in_thread(controls.set_alert_state, AlertState("emr-down", False, "down", now, now))
    states = yield in_thread(controls.alert_states)
    assert list(states) == ["emr-down"] and states["emr-down"].firing is False
    assert abs(states["emr-down"].cleared_at - now) < timedelta(seconds=1)
