"""engine/web/console/messages.js in a real Chromium: a message's stages, content search, bulk resend."""

from __future__ import annotations

import re

import pytest_twisted

from tests.fakes.browser import console_page, log_in, needs_chromium, playwright_api
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message, store_every_stage
from tests.fakes.web import audit_rows

pytestmark = needs_chromium

_SENT = (
    "MSH|^~\\&|HUB|TEST|EMR|WARD|20260101120000||ADT^A04^ADT_A01|OUT1|P|2.5.1\r"
    "PID|1||1^^^PMS^MR||QUIXOTL^ZED\r"
)


def _named(n: int, name: str):
    """pms_message ``n`` about ``name`` (received 2026-01-01 12:<n> UTC)."""
    return pms_message(n, raw=pms_message(n).raw.replace(b"DOE^JANE", name.encode()))


def _look(sync_api, url: str) -> dict:
    """In New York time: search by a name, open the message, read its stages, resend it (cancel, then
    confirm), then resend all of another search's results after the dialog; what the page showed."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    with console_page(sync_api, url, seen["problems"], timezone="America/New_York") as page:
        log_in(page)
        page.wait_for_selector("#results tbody tr")
        seen["zone"] = page.text_content("#zone")
        page.fill("#search-form input[name=q]", "quixotl zed")
        page.click("#search-submit")
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(1)
        seen["row"] = rows.first.locator("td").all_inner_texts()
        expect(page.locator("#bulk-count")).to_have_text("1 message matches")

        rows.first.click()
        page.wait_for_selector("#detail", state="visible")
        stages = page.locator("#stages .stage")
        expect(stages).to_have_count(8)
        seen["stages"] = [stage.get_attribute("data-stage") for stage in stages.all()]
        seen["titles"] = page.locator("#stages .stage h4").all_inner_texts()
        seen["sent_text"] = page.locator("#stages .stage[data-stage=sent] pre").first.inner_text()
        page.locator("#stages .stage[data-stage=received] summary").click()
        seen["table"] = page.locator("#stages .stage[data-stage=received] table.segments").inner_text()
        seen["deliveries_before"] = page.locator("#deliveries tbody tr").count()

        page.click("#resend")
        expect(page.locator("#confirm")).to_be_visible()
        seen["confirm_one"] = page.text_content("#confirm-text")
        page.click("#confirm-cancel")
        expect(page.locator("#confirm")).to_be_hidden()
        seen["after_cancel"] = page.text_content("#action-result")
        page.click("#resend")
        page.click("#confirm-ok")
        expect(page.locator("#action-result")).to_have_text(re.compile("queued 2 delivery"))
        expect(page.locator("#deliveries tbody tr")).to_have_count(seen["deliveries_before"] + 2)

        page.fill("#search-form input[name=q]", "")
        page.fill("#search-form input[name=q]", "smith")
        page.click("#search-submit")
        expect(page.locator("#results tbody tr")).to_have_count(3)
        expect(page.locator("#bulk-resend")).to_have_text("Resend all 3")
        page.click("#bulk-resend")
        expect(page.locator("#confirm")).to_be_visible()
        seen["confirm_all"] = page.text_content("#confirm-text")
        page.click("#confirm-ok")
        expect(page.locator("#bulk-result")).to_have_text(re.compile("Queued again: 3 message"))
    return seen


@pytest_twisted.inlineCallbacks
def test_a_message_shows_every_stage_and_resends_go_after_a_confirmation(start_web, store):
    """Stages as text and named fields, times in the browser's zone, and resends confirmed then refreshed."""
    sync_api = playwright_api()
    message_id = yield store_every_stage(store, _named(1, "QUIXOTL^ZED"), _SENT.encode(), _SENT.encode())
    smiths = yield store.add([_named(n, "SMITH^JANE") for n in range(2, 5)])
    yield store.index_pending()  # as the engine's ContentIndexer does shortly after
    web = start_web()

    seen = yield in_thread(_look, sync_api, web.url + "/")

    assert seen["problems"] == []
    assert seen["zone"] == "Times in America/New_York"
    assert seen["row"][1] == "01/01/2026, 07:01:00 EST"  # 12:01 UTC, in New York
    assert seen["stages"] == ["received", "transformed", "ack", "error", "sent", "response", "sent", "error"]
    assert seen["titles"][4:] == ["Sent to emr", "Answer from emr", "Sent to lab", "Error (lab)"]
    assert seen["sent_text"] == _SENT.replace("\r", "\n").rstrip("\n")
    assert "PID-5\tPatient Name\tQUIXOTL^ZED" in seen["table"]
    assert "PID-5.1\tFamily Name\tQUIXOTL" in seen["table"]
    assert "PID-3.4\tAssigning Authority\tPMS" in seen["table"]
    assert seen["confirm_one"].startswith(f"Resend message {message_id}?")
    assert seen["after_cancel"] == ""
    assert seen["confirm_all"].startswith("Resend all 3 message(s)")
    # Each action reads the message shown again: no stale view.
    # (The view read again after the bulk resend may land after the page is closed.)
    assert [row[1] for row in audit_rows(store)][:5] == ["login", "view", "resend", "view", "resend.bulk"]
    [bulk] = [row for row in audit_rows(store) if row[1] == "resend.bulk"]
    assert bulk[4] == f"count=3 filters=q messages={','.join(map(str, reversed(smiths)))}"
