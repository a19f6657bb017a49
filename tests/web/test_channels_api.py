"""engine.web.channels: /api/channels and /api/listeners count from the store; pause and resume."""

from __future__ import annotations

import pytest_twisted

from engine.model import Status
from tests.fakes.dashboard import adt, dashboard_config, send
from tests.fakes.downstream import Downstream, reply
from tests.fakes.harness import in_thread, start_engine, statuses, wait_until
from tests.fakes.web import BROWSER, basic, fetch


def _get(url: str):
    return in_thread(fetch, url, headers=basic())


def _post(url: str):
    return in_thread(fetch, url, "POST", headers={**basic(), **BROWSER})


def _destination(document: dict) -> dict:
    [channel] = document["channels"]
    [destination] = channel["destinations"]
    return destination


@pytest_twisted.inlineCallbacks
def test_counts_queue_and_pause_through_the_api(tmp_path):
    """Counts move with traffic, survive a restart; a pause over the API holds the queue, resume drains it."""
    downstream = Downstream()
    downstream.script(reply("AE", 207))  # the first message fails for good (on_error: block goes on)
    partner = downstream.start()
    config = dashboard_config(tmp_path, partner)
    engine = start_engine(config)
    try:
        base = f"http://127.0.0.1:{engine.web.port}"
        listener = engine.listeners["main"].port
        yield in_thread(send, listener, adt(1), adt(2), adt(3))
        yield wait_until(lambda: len(downstream.received) == 3)
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: Status.QUEUED not in s.values()))

        answer = yield _get(f"{base}/api/channels?window=5m")
        assert answer.status == 200
        document = answer.json()
        [channel] = document["channels"]
        assert channel["name"] == "adt" and channel["paused"] is None
        assert channel["counts"] == {
            "received": 3, "filtered": 0, "queued": 0, "sent": 2, "errored": 1, "rejected": 0
        }  # fmt: skip
        destination = _destination(document)
        assert destination["counts"] == {"sent": 2, "errored": 1, "filtered": 0}
        assert destination["queue_depth"] == 0 and destination["oldest_queued_at"] is None
        assert destination["last_error"].startswith("AE") and "DOE" not in destination["last_error"]

        listeners = (yield _get(f"{base}/api/listeners?window=5m")).json()["listeners"]
        assert [(x["name"], x["bound"], x["port"], x["received"]) for x in listeners] == [
            ("main", True, listener, 3)
        ]

        paused = yield _post(f"{base}/api/channels/adt/destinations/emr/pause")
        assert paused.status == 200 and paused.json()["changed"] is True
        yield wait_until(lambda: engine.channels["adt"].dispatchers["emr"].held, seconds=5)
        yield in_thread(send, listener, adt(4), adt(5))
        queued = _destination((yield _get(f"{base}/api/channels?window=5m")).json())
        assert queued["paused"]["paused_by"] == "alice" and queued["held"] and queued["queue_depth"] == 2
        assert queued["oldest_queued_age_seconds"] >= 0 and len(downstream.received) == 3
        metrics = (yield in_thread(fetch, f"{base}/metrics")).body.decode()
        assert 'hl7engine_queue_paused{channel="adt",destination="emr"} 1.0' in metrics

        resumed = yield _post(f"{base}/api/channels/adt/destinations/emr/resume")
        assert resumed.status == 200 and resumed.json()["changed"] is True
        yield wait_until(lambda: len(downstream.received) == 5, seconds=10)
        metrics = (yield in_thread(fetch, f"{base}/metrics")).body.decode()
        assert 'hl7engine_queue_paused{channel="adt",destination="emr"} 0.0' in metrics
    finally:
        yield engine.stopService()

    engine = start_engine(config)  # the counts come from the store: a restart keeps them
    try:
        base = f"http://127.0.0.1:{engine.web.port}"
        counts = (yield _get(f"{base}/api/channels?window=1h")).json()["channels"][0]["counts"]
        assert counts["received"] == 5 and counts["sent"] == 4 and counts["errored"] == 1
    finally:
        yield engine.stopService()
        yield downstream.stop()


@pytest_twisted.inlineCallbacks
def test_wrong_requests_are_refused_with_their_reason(tmp_path):
    """An unknown window, channel, destination or action is a 400 or 404 that says why; nothing is paused."""
    downstream = Downstream()
    engine = start_engine(dashboard_config(tmp_path, downstream.start()))
    try:
        base = f"http://127.0.0.1:{engine.web.port}"
        assert (yield _get(f"{base}/api/channels?window=2d")).status == 400
        assert (yield _get(f"{base}/api/channels?since=x")).status == 400
        assert (yield _post(f"{base}/api/channels/nope/pause")).status == 404
        assert (yield _post(f"{base}/api/channels/adt/destinations/nope/pause")).status == 404
        assert (yield _post(f"{base}/api/channels/adt/stop")).status == 404
        assert (yield in_thread(fetch, f"{base}/api/channels/adt/pause", "POST")).status == 401
        assert (yield engine.controls.pauses()) == {}
    finally:
        yield engine.stopService()
        yield downstream.stop()
