"""console/dashboard.js in real Chromium: counts move with traffic; paused, a queue grows; resumed, drains."""

from __future__ import annotations

import pytest_twisted

from tests.fakes.browser import logged_in_console, needs_chromium, sync_api
from tests.fakes.dashboard import adt, dashboard_config, send
from tests.fakes.downstream import Downstream
from tests.fakes.harness import in_thread, start_engine

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
    api = sync_api()
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
