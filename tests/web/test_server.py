"""engine/web/server.py (with auth.py, messages.py and store/audit.py): a real server on loopback over a real SQLite store."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import resource

from engine.cli import main as cli
from engine.config import parse_config
from engine.errors import ConfigError
from engine.model import Status
from engine.record import schema as record_schema  # noqa: F401  (its tables share the database)
from engine.store.audit import AuditRepository
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.schema import audit_log, metadata
from engine.web.auth import Sessions
from engine.web.passwords import check_password_hash, hash_password, verify_password
from engine.web.server import build_root
from tests.fakes.harness import in_thread
from tests.web.conftest import BROWSER, PASSWORD, basic, fetch, new_message

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test, as formatted text."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def logged(events: list[dict]) -> str:
    return "\n".join(formatEvent(event) or "" for event in events)


def audit_rows(store) -> list[tuple]:
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


def login(web, user: str = "alice", password: str = PASSWORD):
    return in_thread(
        fetch,
        f"{web.url}/login",
        "POST",
        headers={**BROWSER, **FORM},
        body=urlencode({"user": user, "password": password}).encode(),
    )


def session_cookie(response) -> dict[str, str]:
    cookie = response.header("set-cookie").split(";", 1)[0]
    return {"Cookie": cookie}


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
    """Without a session or Basic credentials the API answers 401 in JSON; only scripts are asked for Basic."""
    web = start_web()
    script = yield in_thread(fetch, f"{web.url}/api/messages")
    assert script.status == 401
    assert "error" in script.json()
    assert script.header("www-authenticate").startswith("Basic ")
    browser = yield in_thread(fetch, f"{web.url}/api/messages", headers=BROWSER)
    assert browser.status == 401
    assert browser.header("www-authenticate") is None
    for path in (
        "/api",
        "/api/audit",
        "/api/messages/1",
        "/api/messages/1/raw",
        "/api/queues",
        "/api/session",
        "/api/nothing",
    ):
        refused = yield in_thread(fetch, web.url + path)
        assert refused.status == 401, path


@pytest_twisted.inlineCallbacks
def test_basic_credentials_open_the_search(start_web, store):
    """With Basic credentials a search returns summaries, newest first, and never the content."""
    yield store.add([new_message(1), new_message(2, message_code="ORU", trigger_event="R01")])
    web = start_web()
    found = yield in_thread(fetch, f"{web.url}/api/messages", headers=basic())
    assert found.status == 200
    assert found.header("cache-control") == "no-store"
    assert [(m["id"], m["control_id"], m["type"]) for m in found.json()] == [
        (2, "CTRL2", "ORU^R01"),
        (1, "CTRL1", "ADT^A04"),
    ]
    assert all("raw" not in m and "ack" not in m for m in found.json())
    filtered = yield in_thread(
        fetch,
        f"{web.url}/api/messages?type=ADT&sender=PMS/CLINIC&status=transformed&since=2026-01-01T00:00:00Z&limit=10",
        headers=basic(),
    )
    assert [m["id"] for m in filtered.json()] == [1]
    paged = yield in_thread(fetch, f"{web.url}/api/messages?before_id=2", headers=basic())
    assert [m["id"] for m in paged.json()] == [1]
    assert audit_rows(store) == []  # summaries are not audited views


@pytest_twisted.inlineCallbacks
def test_bad_search_parameters_are_400_with_the_reason(start_web):
    """A parameter the API cannot use is refused with a JSON 400 that names it."""
    web = start_web()
    for query, word in (
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("before_id=x", "before_id"),
        ("since=yesterday", "since"),
        ("type=ADT&type=ORU", "type"),
    ):
        response = yield in_thread(fetch, f"{web.url}/api/messages?{query}", headers=basic())
        assert response.status == 400, query
        assert word in response.json()["error"]


@pytest_twisted.inlineCallbacks
def test_login_sets_a_strict_http_only_session_cookie(start_web, store):
    """A form login sets an HttpOnly SameSite=Strict cookie that opens the API until logout."""
    yield store.add([new_message(1)])
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
    """A wrong password (form or Basic) gets 401; the log names the user and the address, never the password."""
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
def test_viewing_a_message_writes_one_audit_row_per_view(start_web, store):
    """Each view of a message (JSON or raw bytes) writes one audit row: user, message id, address, what."""
    [message_id] = yield store.add([new_message(7)])
    web = start_web()
    view = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert view.status == 200
    shown = view.json()
    assert shown["raw"] == new_message(7).raw.decode()
    assert shown["ack"].startswith("MSH|^~\\&|HUB|TEST")
    assert (shown["deliveries"], shown["events"]) == ([], [])
    raw = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/raw", headers=basic())
    assert raw.body == new_message(7).raw
    assert raw.header("content-disposition") == f'attachment; filename="message-{message_id}.hl7"'
    again = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert again.status == 200
    assert audit_rows(store) == [
        ("alice", "view", message_id, "127.0.0.1", ""),
        ("alice", "raw", message_id, "127.0.0.1", ""),
        ("alice", "view", message_id, "127.0.0.1", ""),
    ]
    trail = yield in_thread(fetch, f"{web.url}/api/audit?limit=2", headers=basic())
    assert [(e["action"], e["user"], e["message_id"]) for e in trail.json()] == [
        ("view", "alice", message_id),
        ("raw", "alice", message_id),
    ]
    missing = yield in_thread(fetch, f"{web.url}/api/messages/999", headers=basic())
    assert missing.status == 404
    assert len(audit_rows(store)) == 3


@pytest_twisted.inlineCallbacks
def test_a_view_that_cannot_be_audited_shows_nothing(start_web, store):
    """When the audit row cannot be written the answer is 503 and carries none of the message."""
    [message_id] = yield store.add([new_message(3)])
    web = start_web()
    with store.repository.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE audit_log"))
    response = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert response.status == 503
    assert b"CTRL3" not in response.body and b"DOE" not in response.body


@pytest_twisted.inlineCallbacks
def test_resend_and_reprocess_are_audited_and_guarded(start_web, store):
    """Resend and reprocess are POSTs, audited with the user; a session POST needs the browser header, another site may not POST."""
    [message_id] = yield store.add([new_message(5)])
    web = start_web()
    resent = yield in_thread(
        fetch, f"{web.url}/api/messages/{message_id}/resend?destination=emr", "POST", headers=basic()
    )
    assert resent.json() == {"message_id": message_id, "deliveries": []}
    again = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/reprocess", "POST", headers=basic())
    assert again.json() == {"message_id": message_id, "reprocessed": True}
    stored = yield store.get(message_id)
    assert stored.status == Status.RECEIVED
    assert [row[1:3] + row[4:] for row in audit_rows(store)] == [
        ("resend", message_id, "destination=emr"),
        ("reprocess", message_id, ""),
    ]

    cookie = session_cookie((yield login(web)))
    no_header = yield in_thread(
        fetch, f"{web.url}/api/messages/{message_id}/reprocess", "POST", headers=cookie
    )
    assert no_header.status == 403
    cross_site = yield in_thread(
        fetch,
        f"{web.url}/api/messages/{message_id}/reprocess",
        "POST",
        headers={**basic(), "Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    read_only = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/resend", headers=basic())
    assert read_only.status == 405
    assert [row[1] for row in audit_rows(store)] == ["resend", "reprocess", "login"]


@pytest_twisted.inlineCallbacks
def test_queue_depths_are_listed(start_web, store):
    """/api/queues lists the queues that hold deliveries."""
    web = start_web()
    response = yield in_thread(fetch, f"{web.url}/api/queues", headers=basic())
    assert (response.status, response.json()) == (200, [])


@pytest_twisted.inlineCallbacks
def test_without_users_only_health_and_metrics_are_served(start_web, log_events):
    """With no user configured the console and API refuse everything, even credentials; the start-up log says so."""
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

    authenticator = Authenticator(
        {"alice": hash_password("x", iterations=1)}, Sessions(60, clock=lambda: 0.0), reactor=task.Clock()
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


def test_password_hashes_round_trip():
    """hash_password makes the documented format; verify_password accepts only the right password."""
    encoded = hash_password("s3cret", iterations=1000, salt="abc")
    algorithm, iterations, salt, _digest = encoded.split("$")
    assert (algorithm, iterations, salt) == ("pbkdf2_sha256", "1000", "abc")
    assert verify_password("s3cret", encoded)
    assert not verify_password("S3cret", encoded)
    assert not verify_password("s3cret", "pbkdf2_sha256$x$abc$AAAA")
    assert check_password_hash(encoded) == encoded


def test_config_refuses_a_plain_password(tmp_path):
    """engine.http.users must hold hashes: a plain password is reported at its YAML path."""
    rest = "listeners: []\nchannels: []\n"
    text = 'engine:\n  http:\n    endpoint: "tcp:0"\n    users:\n      alice: "s3cret"\n' + rest
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=tmp_path)
    assert "engine.http.users.alice" in str(raised.value) and "hl7engine hash-password" in str(raised.value)
    hashed = hash_password("s3cret", iterations=1000)
    config = parse_config(
        f'engine:\n  http:\n    endpoint: "tcp:0"\n    users:\n      alice: "{hashed}"\n' + rest,
        base_dir=tmp_path,
    )
    assert (config.engine.http.users, config.engine.http.session_minutes) == ({"alice": hashed}, 30)


def test_hash_password_command_prints_a_usable_hash():
    """`hl7engine hash-password` asks twice and prints a hash the server accepts."""
    result = CliRunner().invoke(cli, ["hash-password", "--iterations", "1000"], input="pw one\npw one\n")
    assert result.exit_code == 0, result.output
    encoded = result.output.strip().splitlines()[-1]
    assert verify_password("pw one", encoded)
    assert "pw one" not in result.output


def test_sessions_expire_when_unused():
    """A session lives session_minutes after its last use; closing it ends it at once."""
    now = [0.0]
    sessions = Sessions(60.0, clock=lambda: now[0])
    token = sessions.open("alice")
    now[0] = 59.0
    assert sessions.user_of(token) == "alice"
    now[0] = 118.0
    assert sessions.user_of(token) == "alice"  # kept alive by the use at 59
    now[0] = 179.0
    assert sessions.user_of(token) is None
    other = sessions.open("alice")
    assert other != token
    assert sessions.close(other) == "alice" and sessions.user_of(other) is None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_url(request) -> str:
    """An empty database, once SQLite and once PostgreSQL (where ``user`` is a reserved word)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def test_audit_migration_matches_the_table(any_url):
    """Revision 0004 creates audit_log exactly as engine.store.audit declares it."""
    engine = create_engine_for(any_url)
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata
        )
    engine.dispose()
    about_audit = [d for d in differences if "audit_log" in repr(d)]
    assert about_audit == []
    assert "audit_log" in metadata.tables


def test_audit_repository_pages_newest_first(any_url):
    """recent() returns newest first, pages by before_id and filters by message or user."""
    engine = create_engine_for(any_url)
    upgrade(engine)
    audit = AuditRepository(engine)
    ids = [
        audit.record(user=user, action="view", remote="127.0.0.1", message_id=n)
        for n, user in enumerate(["alice", "bob", "alice"], start=1)
    ]
    assert [e.id for e in audit.recent()] == ids[::-1]
    assert [e.id for e in audit.recent(1, before_id=ids[2])] == [ids[1]]
    assert [e.message_id for e in audit.recent(user="alice")] == [3, 1]
    assert [e.user for e in audit.recent(message_id=2)] == ["bob"]
    engine.dispose()
