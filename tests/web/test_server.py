"""engine/web/server.py on loopback over a real SQLite store: the tree, login and logout, the console."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.error import CannotListenError
from twisted.web import resource

from engine.channels.destinations.file import FileDestination
from engine.channels.destinations.spec import FileSettings
from engine.config import EngineSettings, HttpSettings
from engine.model import Outcome
from engine.web.auth import Sessions
from engine.web.metrics import Metrics
from engine.web.passwords import hash_password
from engine.web.server import WebService, build_root
from engine.web.throttle import LoginThrottle
from tests.fakes.harness import in_thread, wait_until
from tests.fakes.messages import pms_message
from tests.fakes.outbound import delivery
from tests.fakes.web import (
    BROWSER,
    FORM,
    PASSWORD,
    USERS,
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
    assert (response.status, response.json()) == (200, {"user": "alice", "role": "admin"})
    attributes = [part.strip().lower() for part in response.header("set-cookie").split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    cookie = session_cookie(response)
    found = yield in_thread(fetch, f"{web.url}/api/messages", headers=cookie)
    assert [m["id"] for m in found.json()] == [1]
    me = yield in_thread(fetch, f"{web.url}/api/session", headers=cookie)
    assert me.json() == {"user": "alice", "role": "admin"}
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
    from engine.web.auth import Account, Authenticator
    from engine.web.metrics import Metrics

    clock = task.Clock()
    authenticator = Authenticator(
        {"alice": Account(hash_password("x", iterations=1), "admin")},
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


# -- login limits, the password threads, sessions across restarts -----------------------------------


@pytest_twisted.inlineCallbacks
def test_logins_are_rate_limited_per_user_and_per_address(start_web, log_events):
    """Past the failures allowed, a user or an address gets 429 with Retry-After, unchecked; others get in.

    Both the console's form and Basic credentials are limited; each refusal is counted, and the
    lockout is logged with the name and the address, never a password.
    """
    users = {"alice": USERS["alice"], "bob": USERS["alice"]}
    web = start_web(
        users=users, login_failures_per_user=3, login_failures_per_address=5, login_window_seconds=300
    )
    for _ in range(3):
        assert (yield login(web, password="hunter2-guess")).status == 401
    locked = yield login(web)  # the right password, once the name is locked
    assert (locked.status, locked.json()["error"]) == (429, "too many login attempts; try again in 300 s")
    assert 290 <= int(locked.header("retry-after")) <= 300
    by_script = yield in_thread(fetch, f"{web.url}/api/session", headers=basic())
    assert by_script.status == 429 and by_script.header("retry-after")
    for stranger in ("mallory", "trudy"):
        guess = yield in_thread(fetch, f"{web.url}/api/session", headers=basic(stranger, "hunter2-guess"))
        assert guess.status == 401
    assert (yield login(web, "bob")).status == 429  # five failures from 127.0.0.1: the address is locked
    from_elsewhere = yield login(web, "bob", source="127.0.0.2")
    assert (from_elsewhere.status, from_elsewhere.json()) == (200, {"user": "bob", "role": "admin"})
    script_elsewhere = yield in_thread(
        fetch, f"{web.url}/api/session", headers=basic("bob"), source="127.0.0.2"
    )
    assert script_elsewhere.status == 200
    exposition = web.metrics.exposition()[0].decode()
    assert 'hl7engine_web_logins_refused_total{reason="password"} 5.0' in exposition
    assert 'hl7engine_web_logins_refused_total{reason="user"} 2.0' in exposition
    assert 'hl7engine_web_logins_refused_total{reason="address"} 1.0' in exposition
    text = logged(log_events)
    assert "logins refused for 300 s: too many failures for the user (user alice from 127.0.0.1)" in text
    assert "too many failures for the address (user bob from 127.0.0.1)" in text
    assert text.count("too many failures for the user") == 1  # once per lockout, not per request
    assert "hunter2" not in text and PASSWORD not in text


# A client outside the test's process (no share of its GIL) that sends made-up Basic credentials
# from ``threads`` keep-alive connections for ``seconds``, and prints how many requests it sent.
# Fewer threads than MAX_WAITING_CHECKS: every guess waits to be hashed, none is turned away at once.
_FLOOD = """
import base64, http.client, sys, threading, time
port, seconds, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
sent = []
def flood(n):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    count = 0
    while time.monotonic() < deadline:
        token = base64.b64encode(f"guess{n}-{count}:nope".encode()).decode()
        try:
            connection.request("GET", "/api/session", headers={"Authorization": "Basic " + token})
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        count += 1
    sent.append(count)
workers = [threading.Thread(target=flood, args=(n,)) for n in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(sum(sent))
"""


_REFUSED_PASSWORD = 'hl7engine_web_logins_refused_total{reason="password"}'


@pytest_twisted.inlineCallbacks
def test_a_flood_of_bad_credentials_does_not_hold_up_file_deliveries(start_web, tmp_path, log_events):
    """Password checks run on the web server's own thread: 300 file deliveries during a flood of made-up
    Basic credentials take about as long as without it (the shared pool would queue them behind hashes)."""
    costly = {"alice": hash_password(PASSWORD, iterations=200_000)}  # ~0.1 s per check, as in production
    web = start_web(users=costly, login_failures_per_user=10_000, login_failures_per_address=100_000)
    archive = FileDestination("archive", FileSettings(directory=tmp_path / "out"), reactor=reactor)
    archive.start()

    @defer.inlineCallbacks
    def deliver(first: int):
        began = time.monotonic()
        for n in range(first, first + 300):
            result = yield archive.send(delivery(n, delivery_id=n, destination="archive"))
            assert result.outcome == Outcome.SENT
        return time.monotonic() - began

    try:
        quiet = yield deliver(1)
        flood = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(web.service.port), "8", "24"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            yield wait_until(lambda: _REFUSED_PASSWORD in web.metrics.exposition()[0].decode(), 5.0)
            flooded = yield deliver(1001)
        finally:
            flood.terminate()
            yield in_thread(flood.wait, 10)
    finally:
        yield archive.stop()
    assert len(os.listdir(tmp_path / "out")) == 600
    exposition = web.metrics.exposition()[0].decode()
    refused = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("hl7engine_web_logins_refused_total{")
    }
    assert refused.get("password", 0) >= 2  # the flood was hashed, not turned away before
    print(f"300 file deliveries: {quiet:.2f} s quiet, {flooded:.2f} s under the flood; refused {refused}")
    assert flooded < max(3 * quiet, quiet + 2.0)
    # Clients that left while their guess was hashed are given nothing, without an error.
    assert [event for event in log_events if "log_failure" in event] == []


@pytest_twisted.inlineCallbacks
def test_a_session_survives_a_restart_of_the_web_server_and_its_store(start_web, open_sqlite_store):
    """A session cookie from before a restart (new WebService, new MessageStore on the same database)
    still works; after a logout it does not."""
    web = start_web()
    cookie = session_cookie((yield login(web)))
    yield web.service.stopService()
    again = start_web(on=open_sqlite_store())
    who = yield in_thread(fetch, f"{again.url}/api/session", headers=cookie)
    assert (who.status, who.json()) == (200, {"user": "alice", "role": "admin"})
    out = yield in_thread(fetch, f"{again.url}/logout", "POST", headers={**cookie, **BROWSER})
    assert out.status == 200
    gone = yield in_thread(fetch, f"{again.url}/api/session", headers={**cookie, **BROWSER})
    assert gone.status == 401


@pytest_twisted.inlineCallbacks
def test_a_port_in_use_fails_the_start_and_the_stop_that_follows_is_clean(store):
    """The web port taken: startService raises; the engine's stop after that failed start raises nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        settings = EngineSettings(http=HttpSettings(users=USERS, endpoint=endpoint))
        service = WebService(settings, store, reactor=reactor, metrics=Metrics())
        with pytest.raises(CannotListenError):
            service.startService()
        yield service.stopService()
