"""console/dashboard.js in real Chromium: counts move, a paused queue grows and drains, alerts fire, clear."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, threads

from engine.channels import alerting
from tests.fakes.browser import logged_in_console, needs_chromium, playwright_api
from tests.fakes.dashboard import adt, dashboard_config, send
from tests.fakes.downstream import Downstream
from tests.fakes.harness import free_port, in_thread, start_engine

pytestmark = needs_chromium


def _watch(api, url: str, listener: int) -> dict:
    """Log in, send over MLLP, watch the counts; pause the destination, send, resume; what the page showed."""
    seen: dict = {"problems": []}
    expect = api.expect
    with logged_in_console(api, url, seen["problems"]) as page:
        page.select_option("#dash-window", "5m")
        destination = page.locator('#dash-channels tr[data-destination="emr"]')
        listener_row = page.locator('#dash-listeners tr[data-listener="main"]')
        expect(destination.locator("td.sent")).to_have_text("0")
        expect(listener_row.locator("td.bound")).to_have_text(f"bound :{listener}")

        send(listener, adt(1), adt(2), adt(3))
        expect(destination.locator("td.sent")).to_have_text("3")  # the page polls: no reload
        expect(listener_row.locator("td.received")).to_have_text("3")

        destination.locator("button.dash-pause").click()
        expect(destination.locator("td.state")).to_have_text("paused")
        send(listener, adt(4), adt(5))
        expect(destination.locator("td.depth")).to_have_text("2")
        seen["oldest"] = destination.locator("td.oldest").text_content()
        seen["sent_while_paused"] = destination.locator("td.sent").text_content()

        destination.locator("button.dash-resume").click()
        expect(destination.locator("td.state")).to_have_text("running")
        expect(destination.locator("td.depth")).to_have_text("0")
        expect(destination.locator("td.sent")).to_have_text("5")
        seen["channel_received"] = page.locator(
            '#dash-channels tr.dash-channel[data-channel="adt"] td.received'
        ).text_content()
    return seen


@pytest_twisted.inlineCallbacks
def test_dashboard_counts_move_and_a_paused_queue_grows_then_drains(tmp_path):
    """Messages sent over MLLP show up in the counts; paused, the queue grows; resumed, it drains."""
    api = playwright_api()
    downstream = Downstream()
    engine = start_engine(dashboard_config(tmp_path, downstream.start()))
    try:
        url = f"http://127.0.0.1:{engine.web.port}/"
        seen = yield in_thread(_watch, api, url, engine.listeners["main"].port)
    finally:
        yield engine.stopService()
        yield downstream.stop()
    assert seen["problems"] == []
    assert seen["sent_while_paused"] == "3"
    assert seen["oldest"].endswith(" s")
    assert seen["channel_received"] == "5"
    assert len(downstream.received) == 5


def in_reactor(function, *args):
    """Call ``function`` on the reactor thread from the browser's thread, and wait for it."""
    return threads.blockingCallFromThread(reactor, function, *args)


def _watch_alert(api, url: str, listener: int, partner: Downstream) -> dict:
    """Log in, send to a partner that is down, see the rule fire on the dashboard; partner up: it clears."""
    seen: dict = {"problems": []}
    expect = api.expect
    with logged_in_console(api, url, seen["problems"]) as page:
        send(listener, adt(1))
        rule = page.locator('#dash-alerts tr[data-rule="emr-failing"]')
        expect(rule.locator("td.state")).to_have_text("firing")
        seen["detail"] = rule.locator("td.detail").text_content()
        in_reactor(partner.start)
        expect(rule.locator("td.state")).to_have_text("ok")
        seen["cleared"] = rule.locator("td.cleared").text_content()
    return seen


@pytest_twisted.inlineCallbacks
def test_the_dashboard_shows_an_alert_fire_and_clear(tmp_path, monkeypatch):
    """A failing destination's rule shows firing on the dashboard, then ok once the partner answers."""
    monkeypatch.setattr(alerting, "EVALUATE_SECONDS", 0.2)
    api = playwright_api()
    port = free_port()  # the partner is down until the browser has seen the rule fire
    partner = Downstream(f"tcp:{port}:interface=127.0.0.1")
    rules = """
alerts:
  - {name: emr-failing, kind: destination_failing, channel: adt, destination: emr, threshold: 2}
"""
    engine = start_engine(dashboard_config(tmp_path, port, extra=rules))
    try:
        url = f"http://127.0.0.1:{engine.web.port}/"
        seen = yield in_thread(_watch_alert, api, url, engine.listeners["main"].port, partner)
    finally:
        yield engine.stopService()
        yield partner.stop()
    assert seen["problems"] == []
    assert seen["detail"].startswith("adt/emr: ") and "DOE" not in seen["detail"]
    assert seen["cleared"] != ""
