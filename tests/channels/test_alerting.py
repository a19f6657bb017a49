"""engine.channels.alerting: each kind's condition; firing and clearing once to a real webhook and SMTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from twisted.internet import reactor

from engine.channels import alerting
from engine.channels.alerting import Notifier, condition
from engine.channels.alertspec import AlertRule, EmailNotify
from engine.store.controls import AlertState
from engine.store.reads import DashboardCounts, Pause, QueueState
from tests.fakes.dashboard import adt, dashboard_config, send
from tests.fakes.downstream import Downstream
from tests.fakes.harness import free_port, in_thread, start_engine, wait_until
from tests.fakes.notices import SMTPServer, Webhook
from tests.fakes.web import basic, fetch

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def _counts(**queues: QueueState) -> DashboardCounts:
    return DashboardCounts(
        since=NOW - timedelta(minutes=5),
        at=NOW,
        listeners={"main": 4},
        last_received={"main": NOW},
        channels={"adt": {"SENT": 2, "ERROR": 2}, "lab": {"SENT": 1}},
        channels_queued={},
        queues={tuple(key.split("__")): state for key, state in queues.items()},
    )


def _rule(kind: str, **fields) -> AlertRule:
    return AlertRule(name="r", kind=kind, **fields)


COUNTS = _counts(
    adt__emr=QueueState(
        depth=7, oldest_queued_at=NOW - timedelta(seconds=90), head_attempts=4, head_reason="AE"
    ),
    lab__lis=QueueState(depth=1, oldest_queued_at=NOW - timedelta(seconds=5), settled={"ERROR": 3}),
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (_rule("errors", threshold=2), "2 error(s) on all channels in 5 min"),
        (_rule("errors", channel="lab", threshold=1), None),
        (_rule("errors", channel="lab", destination="lis", threshold=3), "3 error(s) on lab/lis in 5 min"),
        (_rule("queue_depth", threshold=5), "adt/emr: 7 queued"),
        (_rule("queue_depth", channel="lab", threshold=5), None),
        (_rule("queue_age", threshold=60), "adt/emr: oldest queued 90 s ago"),
        (_rule("destination_failing"), "adt/emr: 4 failed attempt(s) in a row (AE)"),
        (_rule("destination_failing", threshold=5), None),
        (_rule("no_traffic", listener="main"), None),
        (_rule("no_traffic", channel="other"), "no message on channel other in 5 min"),
        (_rule("listener_down"), "listener(s) not listening: file"),
        (_rule("listener_down", listener="main"), None),
    ],
)
def test_each_kind_holds_when_its_threshold_is_reached(rule, expected):
    """A rule's condition holds (a sentence of names and counts) exactly when its threshold is reached."""
    assert condition(rule, COUNTS, {}, {"main": True, "file": False}) == expected


def test_a_halted_queue_is_a_failing_destination():
    """destination_failing holds for a queue that on_error: halt stopped, whatever its attempts."""
    pause = Pause("lab", "lis", NOW, "on_error: halt", "AE: application error", 12)
    assert condition(_rule("destination_failing", channel="lab"), COUNTS, {("lab", "lis"): pause}, None) == (
        "lab/lis: halted at delivery 12 (AE: application error)"
    )


def test_listener_down_is_not_decided_without_listeners():
    """A process that runs no listener does not decide listener_down (None: not here)."""
    assert condition(_rule("listener_down"), COUNTS, {}, None) is None


@pytest_twisted.inlineCallbacks
def test_email_reaches_a_real_smtp_server():
    """An email target sends the notice through SMTP: subject with state and rule, the facts in the body."""
    server = SMTPServer()
    port = yield server.start()
    try:
        target = EmailNotify(
            type="email", host="127.0.0.1", port=port, sender="hub@example.org", to=("ops@example.org",)
        )
        state = AlertState("emr-failing", True, "adt/emr: 4 failed attempt(s) in a row (AE)", NOW, None)
        yield Notifier(reactor).tell(target, _rule("destination_failing"), state)
        yield wait_until(lambda: server.mails, seconds=5)
    finally:
        yield server.stop()
    [mail] = server.mails
    assert mail["Subject"] == "[hl7engine] FIRING: r" and mail["To"] == "ops@example.org"
    assert "detail: adt/emr: 4 failed attempt(s) in a row (AE)" in mail.get_payload()


@pytest_twisted.inlineCallbacks
def test_a_failing_destination_fires_once_to_a_webhook_and_clears_once(tmp_path, monkeypatch):
    """Partner down: the rule fires once to the webhook; back: it clears once; a restart re-fires nothing."""
    monkeypatch.setattr(alerting, "EVALUATE_SECONDS", 0.2)
    webhook = Webhook()
    url = yield webhook.start()
    partner_port = free_port()  # nobody listens yet: every attempt is refused
    rules = f"""
alerts:
  - name: emr-failing
    kind: destination_failing
    channel: adt
    destination: emr
    threshold: 2
    notify:
      - {{type: webhook, url: "{url}", timeout_seconds: 2}}
      - {{type: log}}
"""
    config = dashboard_config(tmp_path, partner_port, extra=rules)
    engine = start_engine(config)
    downstream = Downstream(f"tcp:{partner_port}:interface=127.0.0.1")
    try:
        yield in_thread(send, engine.listeners["main"].port, adt(1))
        yield wait_until(lambda: len(webhook.received) == 1, seconds=15)
        fired = webhook.received[0]
        assert (fired["rule"], fired["kind"], fired["state"]) == (
            "emr-failing",
            "destination_failing",
            "firing",
        )
        assert fired["detail"].startswith("adt/emr: ") and "DOE" not in fired["detail"]

        shown = yield in_thread(fetch, f"http://127.0.0.1:{engine.web.port}/api/alerts", headers=basic())
        [alert] = shown.json()["alerts"]
        assert (
            alert["firing"] is True
            and alert["fired_at"] is not None
            and alert["notify"] == ["webhook", "log"]
        )
        metrics = yield in_thread(fetch, f"http://127.0.0.1:{engine.web.port}/metrics")
        assert 'hl7engine_alert_firing{rule="emr-failing"} 1.0' in metrics.body.decode()

        downstream.start()  # the partner comes back: the delivery goes, the head no longer fails
        yield wait_until(lambda: len(webhook.received) == 2, seconds=15)
        assert webhook.received[1]["state"] == "cleared" and webhook.received[1]["cleared_at"] is not None
        yield engine.stopService()

        engine = start_engine(config)
        yield wait_until(lambda: engine.alerts.evaluate().addCallback(lambda changed: changed == []))
        assert len(webhook.received) == 2
    finally:
        yield engine.stopService()
        yield downstream.stop()
        yield webhook.stop()
