"""The console in a real Chromium (Playwright, Debian's /usr/bin/chromium), for the console's tests."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.web import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ON_CI = bool(os.environ.get("CI"))

#: The mark of a browser test module: skipped without Chromium, except under CI where it must run.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not ON_CI,
    reason=f"{CHROMIUM} is not installed (apt-get install chromium); under CI this test always runs",
)


def playwright_api():
    """playwright.sync_api, or a skip when it is not installed (a failure under CI)."""
    try:
        from playwright import sync_api
    except ImportError:
        if ON_CI:
            raise
        pytest.skip(
            "playwright is not installed (pip install playwright; never `playwright install`:"
            " the test uses /usr/bin/chromium)"
        )
    return sync_api


@contextmanager
def console_page(sync_api, url: str, problems: list[str], *, timezone: str | None = None, allowed=()):
    """The console's login page in a fresh browser (in ``timezone``, an IANA name, when given).

    Script and console errors and failed requests (but 401, 429 and the URLs ending with one of
    ``allowed``) go to ``problems``.
    """

    def failed(response) -> None:
        if (
            response.status >= 400
            and response.status not in (401, 429)
            and not response.url.endswith(allowed)
        ):
            problems.append(f"{response.status} {response.url}")

    def logged(message) -> None:
        if message.type == "error" and "401" not in message.text and "429" not in message.text:
            if not allowed or "404" not in message.text:
                problems.append(f"console {message.type}: {message.text}")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(timezone_id=timezone) if timezone else browser.new_page()
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", logged)
            page.on("response", failed)
            page.goto(url)
            page.wait_for_selector("#login-view", state="visible")
            yield page
        finally:
            browser.close()


def log_in(page, password: str = PASSWORD, user: str = "alice") -> None:
    """Fill the login form as ``user`` and submit it."""
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-submit")


@contextmanager
def logged_in_console(sync_api, url: str, problems: list[str], user: str = "alice", password: str = PASSWORD):
    """The console at ``url`` logged in as ``user`` (console_page's ``problems``)."""
    with console_page(sync_api, url, problems) as page:
        log_in(page, password, user)
        page.wait_for_selector("#app-view", state="visible")
        yield page
