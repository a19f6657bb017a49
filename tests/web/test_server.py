"""engine/web/server.py on loopback over a real SQLite store: the tree, login and logout, the console."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.web import resource

from engine.web.auth import Sessions
from engine.web.passwords import hash_password
from engine.web.server import build_root
from engine.web.throttle import LoginThrottle
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message
from tests.fakes.web import (
    BROWSER,
    FORM,
    PASSWORD,
    audit_rows,
    basic,
    fetch,
    logged,
    login,
    session_cookie,
)


@pytest_twisted.inlineCallbacks
def test_health_and_metrics_need_no_login(start_web):
    """/health answers ok and /metrics the Prometheus text without any credentials."""
    web = start_web()
    health = yield in_thread(fetch, f"{web.url}/health")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    metrics = yield in_thread(fetch, f"{web.url}/metrics")
    assert metrics.status == 200
    assert metrics.header("content-type").startswith("text/plain")
    assert b"hl7engine_queue_depth_poll_failures_total 0.0" in metrics.body


@pytest_twisted.inlineCallbacks
def test_api_refuses_requests_without_credentials(start_web):
    """Every path under /api sits behind the gate: without a session or Basic credentials it answers 401."""
    web = start_web()
    for path in (
        "/api",
        "/api/audit",
        "/api/messages",
        "/api/messages/1",
        "/api/messages/1/raw",
        "/api/queues",
        "/api/session",
        "/api/nothing",
    ):
        refused = yield in_thread(fetch, web.url + path)
        assert refused.status == 401, path


@pytest_twisted.inlineCallbacks
def test_login_sets_a_strict_http_only_session_cookie(start_web, store):
    """A form login sets an HttpOnly SameSite=Strict cookie that opens the API until logout."""
    yield store.add([pms_message(1)])
    web = start_web()
    response = yield login(web)
    assert (response.status, response.json()) == (200, {"user": "alice"})
    attributes = [part.strip().lower() for part in response.header("set-cookie").split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    cookie = session_cookie(response)
    found = yield in_thread(fetch, f"{web.url}/api/messages", headers=cookie)
    assert [m["id"] for m in found.json()] == [1]
    me = yield in_thread(fetch, f"{web.url}/api/session", headers=cookie)
    assert me.json() == {"user": "alice"}
    out = yield in_thread(fetch, f"{web.url}/logout", "POST", headers={**cookie, **BROWSER})
    assert out.status == 200
    after = yield in_thread(fetch, f"{web.url}/api/messages", headers=cookie)
    assert after.status == 401
    assert [row[:2] for row in audit_rows(store)] == [("alice", "login"), ("alice", "logout")]


@pytest_twisted.inlineCallbacks
def test_login_needs_the_browser_header(start_web):
    """A login without X-Requested-With (a cross-site form) is refused before any password is checked."""
    web = start_web()
    response = yield in_thread(
        fetch,
        f"{web.url}/login",
        "POST",
        headers=FORM,
        body=urlencode({"user": "alice", "password": PASSWORD}).encode(),
    )
    assert response.status == 403
    assert response.header("set-cookie") is None


@pytest_twisted.inlineCallbacks
def test_wrong_password_is_401_and_logged_without_the_password(start_web, store, log_events):
    """A wrong password (form or Basic) gets 401; the log names the user and address, never the password."""
    web = start_web()
    wrong = "hunter2-not-the-password"
    form = yield login(web, password=wrong)
    assert form.status == 401
    assert form.header("set-cookie") is None
    script = yield in_thread(fetch, f"{web.url}/api/messages", headers=basic(password=wrong))
    assert script.status == 401
    stranger = yield in_thread(fetch, f"{web.url}/api/messages", headers=basic("mallory", wrong))
    assert stranger.status == 401
    text = logged(log_events)
    assert wrong not in text and PASSWORD not in text
    assert "login refused for user alice from 127.0.0.1" in text
    assert "Basic credentials refused for user alice from 127.0.0.1" in text
    assert "user mallory" in text
    assert audit_rows(store) == [("alice", "login_failed", None, "127.0.0.1", "")]


@pytest_twisted.inlineCallbacks
def test_without_users_only_health_and_metrics_are_served(start_web, log_events):
    """With no user configured the console and API refuse everything, even credentials; the log says so."""
    web = start_web(users={})
    assert "no users in engine.http.users" in logged(log_events)
    for path in ("/", "/console/console.js", "/login", "/api/messages"):
        response = yield in_thread(fetch, web.url + path, headers=basic())
        assert response.status == 403, path
    health = yield in_thread(fetch, f"{web.url}/health")
    metrics = yield in_thread(fetch, f"{web.url}/metrics")
    assert (health.status, metrics.status) == (200, 200)


class _Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return json.dumps({"hello": request.path.decode()}).encode()


@pytest_twisted.inlineCallbacks
def test_extra_resources_are_mounted_behind_the_gate(start_web):
    """Resources given as extra_resources (api/patients, fhir) need login like the rest of the API."""
    web = start_web(extra_resources={"api/patients": _Hello(), "fhir": _Hello()})
    for path in ("/api/patients/12", "/fhir/Patient/12"):
        refused = yield in_thread(fetch, web.url + path)
        assert refused.status == 401, path
        served = yield in_thread(fetch, web.url + path, headers=basic())
        assert (served.status, served.json()) == (200, {"hello": path})


def test_nothing_can_be_mounted_over_public_or_taken_names(store):
    """Mounting at a public name or a name already served is a programming error, raised at once."""
    from engine.web.audit import Auditor
    from engine.web.auth import Authenticator
    from engine.web.metrics import Metrics

    clock = task.Clock()
    authenticator = Authenticator(
        {"alice": hash_password("x", iterations=1)},
        Sessions(store, 60),
        reactor=clock,
        pool=None,  # never asked: nothing is checked here
        throttle=LoginThrottle(per_user=5, per_address=5, window=60.0, clock=clock.seconds),
    )
    for path in ("health", "console/x", "api/messages", "api", "a//b"):
        with pytest.raises(ValueError):
            build_root(
                store=store,
                metrics=Metrics(),
                authenticator=authenticator,
                auditor=Auditor(store),
                default_charset="utf-8",
                extra_resources={path: _Hello()},
            )


@pytest_twisted.inlineCallbacks
def test_console_files_are_served_with_a_strict_policy(start_web):
    """The console page and its assets need no login, and forbid inline scripts and framing."""
    web = start_web()
    page = yield in_thread(fetch, f"{web.url}/")
    assert page.status == 200 and b'<script src="/console/console.js"' in page.body
    assert "script-src 'self'" in page.header("content-security-policy")
    script = yield in_thread(fetch, f"{web.url}/console/console.js")
    assert script.header("content-type").startswith("text/javascript")
    missing = yield in_thread(fetch, f"{web.url}/console/nothing.js")
    assert missing.status == 404
