"""engine/web/console/: a real Chromium (Playwright) logs in, searches, reads a message, sees the nodes."""

from __future__ import annotations

import re

import pytest_twisted

from engine.model import Status
from engine.store.reads import NodeState
from engine.store.retention import RetentionPolicy, RetentionRepository
from engine.store.schema import audit_log
from tests.fakes.browser import console_page, log_in, needs_chromium, playwright_api
from tests.fakes.cluster import add_node, two_alive_one_dead
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message
from tests.fakes.store import NOW, rows_of
from tests.fakes.trial import try_actions
from tests.fakes.web import ROLE_USERS

pytestmark = needs_chromium


def _browse(sync_api, url: str, control_id: str) -> dict:
    """Wrong passwords (the last refused by the login limit), the right one, a search by control id, the
    message, in a browser; what it showed."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    # Waiting goes through locators: the console's Content-Security-Policy forbids the string
    # evaluation that page.wait_for_function would need, and the test keeps that policy on.
    with console_page(sync_api, url, seen["problems"]) as page:
        log_in(page, "not the password")
        expect(page.locator("#login-error")).not_to_be_empty()
        seen["login_error"] = page.text_content("#login-error")

        page.fill("#login-user", "mallory")  # two failures allowed per name: the third is refused
        for _ in range(2):
            page.fill("#login-password", "guess")
            with page.expect_response("**/login"):
                page.click("#login-submit")
        page.fill("#login-password", "guess")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_have_text(re.compile("too many login attempts"))
        seen["throttled_error"] = page.text_content("#login-error")

        log_in(page)
        page.wait_for_selector("#app-view", state="visible")
        page.wait_for_selector("#results tbody tr")
        seen["who"] = page.text_content("#who")
        seen["cookie_visible_to_scripts"] = page.evaluate("document.cookie")

        page.fill("#search-form input[name=control_id]", control_id)
        page.click("#search-submit")
        expect(page.locator("#results tbody tr")).to_have_count(1)
        seen["rows"] = page.locator("#results tbody tr").all_inner_texts()

        page.click("#results tbody tr")
        page.wait_for_selector("#detail", state="visible")
        expect(page.locator("#detail-raw")).not_to_be_empty()
        seen["raw"] = page.text_content("#detail-raw")
        seen["ack"] = page.text_content("#detail-ack")
        seen["detail_id"] = page.text_content("#detail-id")

    return seen


@pytest_twisted.inlineCallbacks
def test_console_login_search_and_view_in_a_real_browser(start_web, store):
    """Logged in to the console, an operator finds a message by control id and reads its raw text, audited."""
    sync_api = playwright_api()
    ids = yield store.add(
        [pms_message(n) for n in range(1, 6)]
        + [
            pms_message(
                42,
                raw=b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04|CTRL42|P|2.5.1\rPID|1||42^^^PMS^MR||<b>O'HARA</b>^ANN\r",
            )
        ]
    )
    wanted = ids[-1]
    web = start_web(login_failures_per_user=2)

    seen = yield in_thread(_browse, sync_api, web.url + "/", "CTRL42")

    assert seen["problems"] == []
    assert seen["login_error"] == "wrong user name or password"
    assert re.fullmatch(r"too many login attempts; try again in \d+ s", seen["throttled_error"])
    assert seen["who"] == "alice (admin)"
    assert seen["cookie_visible_to_scripts"] == ""  # HttpOnly
    assert len(seen["rows"]) == 1 and "CTRL42" in seen["rows"][0]
    assert seen["detail_id"] == str(wanted)
    # Segments on their own lines, markup shown as text, not interpreted.
    assert (
        seen["raw"] == "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04|CTRL42|P|2.5.1\n"
        "PID|1||42^^^PMS^MR||<b>O'HARA</b>^ANN"
    )
    assert seen["ack"].startswith("MSH|^~\\&|HUB|TEST|PMS|CLINIC")

    c = audit_log.c
    rows = rows_of(store.repository.engine, c.user, c.action, c.message_id, c.remote)
    assert [tuple(row) for row in rows] == [
        ("alice", "login_failed", None, "127.0.0.1"),
        ("alice", "login", None, "127.0.0.1"),
        ("alice", "view", wanted, "127.0.0.1"),
    ]


@pytest_twisted.inlineCallbacks
def test_console_shows_a_pruned_message_as_such(start_web, store):
    """A message whose content retention removed reads as such in the console, not as an empty message."""
    sync_api = playwright_api()
    yield store.add([pms_message(1), pms_message(43, status=Status.SENT)])
    retention = RetentionRepository(store.repository.engine)
    yield in_thread(retention.prune, RetentionPolicy(default_days=1), limit=10)
    web = start_web(login_failures_per_user=2)  # _browse expects the third failure of a name refused

    seen = yield in_thread(_browse, sync_api, web.url + "/", "CTRL43")

    assert seen["problems"] == []
    assert seen["raw"].startswith("(content removed by retention ")
    assert seen["ack"].startswith("MSH|^~\\&|HUB|TEST|PMS|CLINIC")  # our answer is kept


def _see_nodes(sync_api, url: str, engine) -> dict:
    """Log in, read the nodes table, then let a node start and wait for the console's own refresh."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    with console_page(sync_api, url, seen["problems"]) as page:
        log_in(page)
        rows = page.locator("#nodes-table tbody tr")
        expect(rows).to_have_count(3)
        seen["rows"] = [row.locator("td").all_inner_texts() for row in rows.all()]
        seen["classes"] = [row.get_attribute("class") for row in rows.all()]
        seen["unheld"] = page.text_content("#nodes-unheld")
        seen["empty_shown"] = page.is_visible("#nodes-empty")

        add_node(engine, "node-d", heartbeat_at=NOW, pid=104)
        expect(rows).to_have_count(4, timeout=15_000)  # no click: the console reads the nodes again
        seen["after"] = rows.nth(3).locator("td").all_inner_texts()
    return seen


@pytest_twisted.inlineCallbacks
def test_console_shows_the_nodes_alive_and_dead_with_what_they_hold(start_web, open_sqlite_store):
    """Logged in, one sees two alive nodes and a dead one, their leases, the free work, then a new node."""
    sync_api = playwright_api()
    store = open_sqlite_store(clock=lambda: NOW)
    two_alive_one_dead(store.repository.engine, NOW)
    web = start_web(on=store)

    seen = yield in_thread(_see_nodes, sync_api, web.url + "/", store.repository.engine)

    assert seen["problems"] == []
    every_role = "intake, processing, delivery, jobs"
    assert seen["rows"] == [
        ["node-a", "alive", "2 s ago", every_role, "host-a", "101", "channel:adt, queue:adt/emr"],
        ["node-b", "alive", "4 s ago", "delivery", "host-b", "102", "queue:lab/lis"],
        ["node-c", "dead", "40 s ago", every_role, "host-c", "103", "channel:lab (expired)"],
    ]
    assert seen["classes"] == [
        f"node node-{state}" for state in (NodeState.ALIVE, NodeState.ALIVE, NodeState.DEAD)
    ]
    assert seen["unheld"] == "Held by no node: channel:lab, job:retention"
    assert seen["empty_shown"] is False
    assert seen["after"][:3] == ["node-d", "alive", "0 s ago"]


def _try_message(sync_api, url: str, control_id: str) -> dict:
    """Log in, open a message, press Try: what the panel shows."""
    seen: dict = {"problems": []}
    with console_page(sync_api, url, seen["problems"]) as page:
        log_in(page)
        page.wait_for_selector("#app-view", state="visible")
        page.fill("#search-form input[name=control_id]", control_id)
        page.click("#search-submit")
        sync_api.expect(page.locator("#results tbody tr")).to_have_count(1)
        page.click("#results tbody tr")
        page.wait_for_selector("#detail", state="visible")
        seen["panel_before"] = page.is_visible("#try-panel")
        page.click("#try")
        page.wait_for_selector("#try-panel", state="visible")
        sync_api.expect(page.locator("#try-result")).not_to_be_empty()
        seen["own"] = page.text_content("#try-result")
        page.fill("#try-channel", "other")
        page.click("#try")
        sync_api.expect(page.locator("#try-result")).to_contain_text("not accepted")
        seen["other"] = page.text_content("#try-result")
    return seen


def _as_each_role(sync_api, url: str) -> dict:
    """Log in as vera (viewer), otto (operator) and alice (admin) in turn; what each one's console showed."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    with console_page(sync_api, url, seen["problems"]) as page:
        for user in ("vera", "otto", "alice"):
            log_in(page, user=user)
            page.wait_for_selector("#app-view", state="visible")
            expect(page.locator("#results tbody tr")).to_have_count(1)
            page.click("#results tbody tr")
            page.wait_for_selector("#detail", state="visible")
            expect(page.locator("#detail-id")).not_to_be_empty()
            shown = {
                "who": page.text_content("#who"),
                "row": page.locator("#results tbody tr td").all_inner_texts(),
                "resend": page.is_visible("#resend"),
                "raw": page.is_visible("#detail-raw") and page.text_content("#detail-raw"),
                "viewer_note": page.is_visible("#detail .viewer-only"),
                "patient_search": page.is_visible("#search-form input[name=patient_id]"),
                "audit": page.is_visible("#audit"),
                "config": page.is_visible("#config"),
            }
            if user == "otto":
                page.click("#resend")
                page.click("#confirm-ok")
                expect(page.locator("#action-result")).not_to_be_empty()
                shown["resent"] = page.text_content("#action-result")
            if user == "alice":
                expect(page.locator("#audit-table tbody tr").first).to_be_visible()
                shown["audit_actions"] = page.locator(
                    "#audit-table tbody tr td:nth-child(4)"
                ).all_inner_texts()
                page.fill("#audit-form input[name=action]", "resend")
                page.click("#audit-submit")
                expect(page.locator("#audit-table tbody tr")).to_have_count(1)
                shown["resend_rows"] = page.locator("#audit-table tbody tr td").all_inner_texts()
                expect(page.locator("#config-history tbody tr")).to_have_count(2)
                shown["config_text"] = page.text_content("#config-text")
                page.click("#config-diff")
                expect(page.locator("#config-diff-text .diff-add")).to_have_count(1)
                shown["diff_added"] = page.text_content("#config-diff-text .diff-add")
                shown["diff_removed"] = page.text_content("#config-diff-text .diff-remove")
            seen[user] = shown
            page.click("#logout")
            page.wait_for_selector("#login-view", state="visible")
    return seen


@pytest_twisted.inlineCallbacks
def test_console_try_button_shows_what_the_channel_would_change(start_web, store):
    """On a message's page, Try shows per destination the fields its channel would change, nothing stored."""
    sync_api = playwright_api()
    yield store.add([pms_message(7)])
    web = start_web(message_actions=try_actions())

    seen = yield in_thread(_try_message, sync_api, web.url + "/", "CTRL7")

    assert seen["problems"] == []
    assert seen["panel_before"] is False
    assert seen["own"] == (
        "CTRL7 ADT^A04: accepted by adt\n"
        "  -> emr: would deliver, 1 change(s)\n"
        "       MSH-5 (Receiving Application): 'HUB' -> 'EMR'"
    )
    assert seen["other"].startswith(
        "CTRL7 ADT^A04: not accepted by other: listener 'main' gives this message"
    )


@pytest_twisted.inlineCallbacks
def test_each_role_sees_only_what_it_may_in_a_real_browser(start_web, store):
    """A viewer sees no content nor Resend; an operator reads and resends; an admin sees audit and config."""
    sync_api = playwright_api()
    [message_id] = yield store.add([pms_message(7, status=Status.SENT, patient_id="P-7")])
    for version in ("1", "2"):
        yield store.record_config(
            applied_at=NOW,
            source="channels.yaml",
            content=f"engine:\n  application: HUB\n  version: {version}\n",
            sha256=version * 64,
            changes="",
        )
    web = start_web(users=ROLE_USERS)

    seen = yield in_thread(_as_each_role, sync_api, web.url + "/")

    assert seen["problems"] == []  # no request of any role's console was refused
    vera, otto, alice = seen["vera"], seen["otto"], seen["alice"]
    assert (vera["who"], otto["who"], alice["who"]) == ("vera (viewer)", "otto (operator)", "alice (admin)")
    assert "P-7" not in vera["row"] and "P-7" in otto["row"]
    assert (vera["resend"], vera["raw"], vera["viewer_note"], vera["patient_search"]) == (
        False,
        False,
        True,
        False,
    )
    assert (vera["audit"], vera["config"]) == (False, False)
    assert otto["resend"] and otto["raw"].startswith("MSH|^~\\&|PMS|CLINIC") and not otto["viewer_note"]
    assert (otto["patient_search"], otto["audit"], otto["config"]) == (True, False, False)
    assert otto["resent"].startswith("queued ")
    assert alice["resend"] and alice["audit"] and alice["config"]
    assert {"login", "view"} <= set(alice["audit_actions"])
    assert alice["resend_rows"][2:5] == ["otto", "resend", str(message_id)]
    assert alice["config_text"] == "engine:\n  application: HUB\n  version: 2\n"
    assert (alice["diff_added"], alice["diff_removed"]) == ("+  version: 2\n", "-  version: 1\n")


def _lose_the_session(sync_api, url: str) -> dict:
    """Log in as an admin, lose the session cookie, then refresh the dashboard and the audit trail and
    search: what each showed."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    with console_page(sync_api, url, seen["problems"]) as page:
        log_in(page)
        page.wait_for_selector("#app-view", state="visible")
        expect(page.locator("#audit-table tbody tr").first).to_be_visible()
        page.context.clear_cookies()
        # The nodes' own 5-second refresh may show the login form (hiding these views) at any moment
        # from here, so the clicks are dispatched to the buttons whether or not they are visible.
        page.dispatch_event("#dash-refresh", "click")
        page.dispatch_event("#audit-submit", "click")
        expect(page.locator("#dash-error")).not_to_be_empty()
        expect(page.locator("#audit-error")).not_to_be_empty()
        seen["dashboard"] = page.text_content("#dash-error")
        seen["audit"] = page.text_content("#audit-error")
        if page.is_visible("#search-submit"):  # the nodes' own refresh may have logged out first
            page.click("#search-submit")
        page.wait_for_selector("#login-view", state="visible")
        seen["app_shown"] = page.is_visible("#app-view")
        seen["login_error"] = page.text_content("#login-error")
    return seen


@pytest_twisted.inlineCallbacks
def test_a_lost_session_shows_the_login_form_and_the_admin_views_say_why(start_web, store):
    """A 401 on the console's own calls shows the login form; the dashboard and admin views say why."""
    sync_api = playwright_api()
    yield store.add([pms_message(1)])
    web = start_web()

    seen = yield in_thread(_lose_the_session, sync_api, web.url + "/")

    assert seen["problems"] == []
    assert seen["dashboard"] == seen["audit"] == "log in first (POST /login), or send HTTP Basic credentials"
    assert (seen["app_shown"], seen["login_error"]) == (False, "")
