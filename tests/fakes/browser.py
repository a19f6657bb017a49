"""A real Chromium (Debian's /usr/bin/chromium) driven by Playwright, on the console's login page."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.web import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ON_CI = bool(os.environ.get("CI"))

#: Mark a module whose tests need the browser: skipped without it, except under CI.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not ON_CI, reason=f"{CHROMIUM} is not installed; under CI this test always runs"
)


def sync_api():
    """playwright.sync_api, or a skip (a failure under CI) when Playwright is missing."""
    try:
        from playwright import sync_api as api
    except ImportError:
        if ON_CI:
            raise
        pytest.skip("playwright is not installed (pip install playwright; the test uses /usr/bin/chromium)")
    return api


@contextmanager
def logged_in_console(api, url: str, problems: list[str], user: str = "alice", password: str = PASSWORD):
    """The console at ``url`` logged in as ``user``; page errors and failed requests go to ``problems``."""
    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "response",
                lambda response: (
                    problems.append(f"{response.status} {response.url}")
                    if response.status >= 400 and response.status != 401
                    else None
                ),
            )
            page.goto(url)
            page.wait_for_selector("#login-view", state="visible")
            page.fill("#login-user", user)
            page.fill("#login-password", password)
            page.click("#login-submit")
            page.wait_for_selector("#app-view", state="visible")
            yield page
        finally:
            browser.close()
