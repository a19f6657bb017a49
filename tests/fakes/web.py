"""Talking to the web server on loopback from a test: credentials, a blocking HTTP client, the audit rows.

The ``start_web`` fixture (tests/web/conftest.py) starts a WebService; the functions here reach it.
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from twisted.internet.address import IPv4Address
from twisted.logger import formatEvent
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from engine.channels.overview import Overview
from engine.channels.pausing import Controls
from engine.store.message_store import MessageStore
from engine.store.schema import audit_log
from engine.web.alerts import AlertsApi
from engine.web.audit import Auditor
from engine.web.auth import Account
from engine.web.channels import dashboard_resources
from engine.web.metrics import Metrics
from engine.web.passwords import hash_password
from engine.web.roles import ADMIN
from engine.web.server import WebService
from tests.fakes.harness import in_thread
from tests.fakes.store import rows_of

PASSWORD = "correct horse battery staple"
# Few iterations keep the suite fast; the format carries them, so the server verifies as usual.
USERS = {"alice": hash_password(PASSWORD, iterations=1000)}
# The same users as the Authenticator takes them: a bare hash in the config is an admin.
ACCOUNTS = {name: Account(encoded, ADMIN) for name, encoded in USERS.items()}
# engine.http.users with one user of each role (all with PASSWORD): vera views, otto operates.
ROLE_USERS = {
    "vera": {"password": USERS["alice"], "role": "viewer"},
    "otto": {"password": USERS["alice"], "role": "operator"},
    "alice": {"password": USERS["alice"], "role": "admin"},
}
BROWSER = {"X-Requested-With": "test"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def logged(events: list[dict]) -> str:
    """The events as formatted text."""
    return "\n".join(formatEvent(event) or "" for event in events)


def http_request(
    *, headers: dict[bytes, bytes] | None = None, cookies: dict[bytes, bytes] | None = None
) -> server.Request:
    """A twisted.web Request from 10.0.0.5 with these headers and cookies, as the Site would hand it over."""
    request = server.Request(DummyChannel())
    request.client = IPv4Address("TCP", "10.0.0.5", 51000)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.received_cookies = dict(cookies or {})
    return request


def basic(user: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    """The Authorization header of HTTP Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Response:
    """What came back: status, headers (lower-case names, every value) and body."""

    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)


def fetch(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> Response:
    """One blocking HTTP request (run it with tests.fakes.harness.in_thread: the reactor serves it).

    ``source``: the local address to send from (``127.0.0.2``: another client on loopback).
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        collected: dict[str, list[str]] = {}
        for name, value in response.getheaders():
            collected.setdefault(name.lower(), []).append(value)
        return Response(response.status, collected, response.read())
    finally:
        connection.close()


@dataclass
class RunningWeb:
    """A started WebService and how to reach it."""

    service: WebService
    store: MessageStore
    metrics: Metrics

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"


def login(web: RunningWeb, user: str = "alice", password: str = PASSWORD, *, source: str | None = None):
    """POST /login as the console does (from ``source``); a Deferred of the Response."""
    return in_thread(
        fetch,
        f"{web.url}/login",
        "POST",
        headers={**BROWSER, **FORM},
        body=urlencode({"user": user, "password": password}).encode(),
        source=source,
    )


def session_cookie(response: Response) -> dict[str, str]:
    """The Cookie header that sends back the session a login response set."""
    cookie = response.header("set-cookie").split(";", 1)[0]
    return {"Cookie": cookie}


def console_resources(store: MessageStore) -> dict:
    """What the engine mounts for the console's dashboard, for an engine without channels or rules."""
    controls = Controls(store)
    resources = dashboard_resources(controls, lambda: Overview((), ()), Auditor(store))
    return {**resources, "api/alerts": AlertsApi(controls, lambda: ())}


def audit_rows(store: MessageStore) -> list[tuple]:
    """(user, action, message id, remote, detail) of every audit row, oldest first."""
    c = audit_log.c
    return rows_of(store.repository.engine, c.user, c.action, c.message_id, c.remote, c.detail)
