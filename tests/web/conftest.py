"""Web fixtures: a real WebService on a loopback port over a real SQLite store, and a blocking HTTP client."""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

from engine.config import EngineSettings, HttpSettings
from engine.model import NewMessage, Status
from engine.store.message_store import MessageStore
from engine.store.schema import audit_log
from engine.web.metrics import Metrics
from engine.web.passwords import hash_password
from engine.web.server import WebService
from tests.fakes.harness import in_thread

PASSWORD = "correct horse battery staple"
# Few iterations keep the suite fast; the format carries them, so the server verifies as usual.
USERS = {"alice": hash_password(PASSWORD, iterations=1000)}
BROWSER = {"X-Requested-With": "test"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
RAW = (
    b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|CTRL{n}|P|2.5.1\r"
    b"PID|1||{n}^^^PMS^MR||DOE^JANE||19800101|F\r"
)


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def logged(events: list[dict]) -> str:
    """The events as formatted text."""
    return "\n".join(formatEvent(event) or "" for event in events)


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
    url: str, method: str = "GET", *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Response:
    """One blocking HTTP request (run it with tests.fakes.harness.in_thread: the reactor serves it)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
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


def new_message(n: int, **columns) -> NewMessage:
    """A stored-looking ADT^A04 with control id CTRL<n>."""
    values = dict(
        raw=RAW.replace(b"{n}", str(n).encode()),
        received_at=datetime(2026, 1, 1, 12, n % 60, tzinfo=UTC),
        listener="main",
        peer="127.0.0.1:40000",
        status=Status.TRANSFORMED,
        channel="adt",
        sending_application="PMS",
        sending_facility="CLINIC",
        receiving_application="HUB",
        receiving_facility="TEST",
        message_code="ADT",
        trigger_event="A04",
        message_structure="ADT_A01",
        control_id=f"CTRL{n}",
        version="2.5.1",
        processing_id="P",
        ack_code="AA",
        ack=f"MSH|^~\\&|HUB|TEST|PMS|CLINIC|20260101120001||ACK^A04|A{n}|P|2.5.1\rMSA|AA|CTRL{n}\r".encode(),
    )
    values.update(columns)
    return NewMessage(**values)


@dataclass
class RunningWeb:
    """A started WebService and how to reach it."""

    service: WebService
    store: MessageStore
    metrics: Metrics

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"


@pytest.fixture
def start_web(store):
    """Starts a WebService on an ephemeral loopback port, stopped after the test.

    ``start_web(users=..., extra_resources=..., session_minutes=...)`` gives a RunningWeb.
    """
    services: list[WebService] = []

    def start(
        *, users: dict[str, str] | None = None, extra_resources=None, session_minutes: int = 30
    ) -> RunningWeb:
        settings = EngineSettings(
            http=HttpSettings(
                endpoint="tcp:0:interface=127.0.0.1",
                users=USERS if users is None else users,
                session_minutes=session_minutes,
            )
        )
        metrics = Metrics()
        service = WebService(
            settings, store, reactor=reactor, metrics=metrics, extra_resources=extra_resources
        )
        service.startService()
        services.append(service)
        return RunningWeb(service, store, metrics)

    yield start
    for service in services:
        pytest_twisted.blockon(service.stopService())


def login(web: RunningWeb, user: str = "alice", password: str = PASSWORD):
    """POST /login as the console does; a Deferred of the Response."""
    return in_thread(
        fetch,
        f"{web.url}/login",
        "POST",
        headers={**BROWSER, **FORM},
        body=urlencode({"user": user, "password": password}).encode(),
    )


def session_cookie(response: Response) -> dict[str, str]:
    """The Cookie header that sends back the session a login response set."""
    cookie = response.header("set-cookie").split(";", 1)[0]
    return {"Cookie": cookie}


def audit_rows(store: MessageStore) -> list[tuple]:
    """(user, action, message id, remote, detail) of every audit row, oldest first."""
    with store.repository.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.select(
                    audit_log.c.user,
                    audit_log.c.action,
                    audit_log.c.message_id,
                    audit_log.c.remote,
                    audit_log.c.detail,
                ).order_by(audit_log.c.id)
            )
        ]
