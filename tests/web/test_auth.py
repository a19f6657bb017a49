"""engine/web/auth.py: sessions, the authenticator (cookie or HTTP Basic) and the gate in front of the API."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.web import resource, server

from engine.store.schema import web_sessions
from engine.web.auth import (
    SESSION_COOKIE,
    Authenticator,
    Gate,
    Principal,
    Sessions,
    authenticated,
    loggable,
    remote_address,
)
from engine.web.responses import JsonResource, json_reply, send
from engine.web.roles import RolePolicy
from engine.web.throttle import LoginThrottle
from tests.fakes.harness import in_thread
from tests.fakes.reactor import InlinePool, InlineThreads
from tests.fakes.web import (
    ACCOUNTS,
    BROWSER,
    PASSWORD,
    basic,
    fetch,
    http_request,
    logged,
    login,
    session_cookie,
)


class _Clock:
    """Seconds that a test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _WallClock:
    """An aware UTC time that a test moves by hand (the sessions' clock)."""

    def __init__(self):
        self.now = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def inline_authenticator(
    clock: _Clock, lifetime: float = 60.0, *, store=None, throttle: LoginThrottle | None = None
) -> tuple[Authenticator, InlinePool]:
    """An Authenticator of ACCOUNTS whose password checks run inline on ``clock``'s time, and its pool.

    Its sessions are on ``store`` (only the tests that use a cookie need one).
    """
    inline = InlineThreads()
    sessions = Sessions(store, lifetime)
    throttle = throttle or LoginThrottle(per_user=1000, per_address=1000, window=60.0, clock=clock)
    authenticator = Authenticator(
        ACCOUNTS, sessions, reactor=inline, pool=inline.pool, throttle=throttle, clock=clock
    )
    return authenticator, inline.pool


def checked(authenticator: Authenticator, user: str, password: str, address: str = "10.0.0.5") -> bool:
    """check_password's answer (it fires at once with an inline reactor)."""
    answers = []
    authenticator.check_password(user, password, address).addCallback(answers.append)
    (answer,) = answers
    return answer


def principal_of(authenticator: Authenticator, request) -> Principal | None:
    answers = []
    authenticator.authenticate(request).addCallback(answers.append)
    (answer,) = answers
    return answer


def basic_header(credentials: bytes) -> dict[bytes, bytes]:
    return {b"authorization": b"Basic " + base64.b64encode(credentials)}


def session_rows(store) -> list[tuple[str, str]]:
    """(token_sha256, user) of every stored session, sorted."""
    with store.repository.engine.connect() as connection:
        return sorted(
            tuple(row)
            for row in connection.execute(sa.select(web_sessions.c.token_sha256, web_sessions.c.user))
        )


# -- sessions -------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_sessions_expire_when_unused(store):
    """A session lives session_minutes after its last use; closing it ends it at once."""
    clock = _WallClock()
    sessions = Sessions(store, 60.0, clock=clock)
    token = yield sessions.open("alice")
    clock.advance(59)
    assert (yield sessions.user_of(token)) == "alice"
    clock.advance(59)
    assert (yield sessions.user_of(token)) == "alice"  # kept alive by the use at 59
    clock.advance(61)
    assert (yield sessions.user_of(token)) is None
    other = yield sessions.open("alice")
    assert other != token
    assert (yield sessions.close(other)) == "alice"
    assert (yield sessions.user_of(other)) is None


@pytest_twisted.inlineCallbacks
def test_unknown_and_expired_sessions_have_no_user(store):
    """A token never issued, or one that expired, names nobody and closes as nobody."""
    clock = _WallClock()
    sessions = Sessions(store, 10.0, clock=clock)
    token = yield sessions.open("alice")
    assert (yield sessions.user_of("forged")) is None
    assert (yield sessions.close("forged")) is None
    clock.advance(10)
    assert (yield sessions.close(token)) is None


@pytest_twisted.inlineCallbacks
def test_the_store_holds_only_token_digests_and_forgets_expired_sessions(store):
    """The table holds sha256(token), never the token; expiry, logout and the next login delete rows."""
    clock = _WallClock()
    sessions = Sessions(store, 60.0, clock=clock)
    first = yield sessions.open("alice")
    second = yield sessions.open("bob")
    assert session_rows(store) == sorted(
        [
            (hashlib.sha256(first.encode()).hexdigest(), "alice"),
            (hashlib.sha256(second.encode()).hexdigest(), "bob"),
        ]
    )
    assert (yield sessions.close(second)) == "bob"
    clock.advance(61)
    third = yield sessions.open("carol")  # a login sweeps the expired sessions away
    assert [user for _, user in session_rows(store)] == ["carol"]
    clock.advance(61)
    assert (yield sessions.user_of(third)) is None
    assert session_rows(store) == []


# -- request helpers ------------------------------------------------------------------------------


def test_authenticated_needs_a_request_that_passed_the_gate():
    """authenticated() of a request the gate never admitted is a programming error, raised at once."""
    with pytest.raises(RuntimeError, match="did not pass the gate"):
        authenticated(http_request())


def test_remote_address_and_loggable_user_names():
    """The client is the peer (forwarded-for headers are ignored); a logged user name is printable, short."""
    assert remote_address(http_request(headers={b"x-forwarded-for": b"1.2.3.4"})) == "10.0.0.5"
    assert loggable("al\nice\x00") == "al?ice?"
    assert loggable("x" * 500) == "x" * 100


# -- the authenticator ----------------------------------------------------------------------------


def test_a_password_is_checked_against_the_users_hash():
    """The right password checks; a wrong one or an unknown user does not, and each of those is hashed."""
    authenticator, pool = inline_authenticator(_Clock())
    assert authenticator.enabled
    assert checked(authenticator, "alice", PASSWORD)
    assert not checked(authenticator, "alice", "wrong")
    assert not checked(authenticator, "mallory", PASSWORD)
    assert pool.calls == 3  # the stranger costs a hash too (the decoy): timing tells no names


def test_verified_credentials_are_not_hashed_again_for_a_session_lifetime():
    """Credentials that checked are not hashed again until a session lifetime ends; other credentials are."""
    clock = _Clock()
    authenticator, pool = inline_authenticator(clock, lifetime=60.0)
    assert checked(authenticator, "alice", PASSWORD)
    clock.now = 59.0
    assert checked(authenticator, "alice", PASSWORD)
    assert pool.calls == 1
    assert not checked(authenticator, "alice", "wrong")
    assert pool.calls == 2
    clock.now = 61.0
    assert checked(authenticator, "alice", PASSWORD)
    assert pool.calls == 3


def test_nobody_gets_in_without_users():
    """With no user configured the authenticator is disabled and no password checks."""
    clock = _Clock()
    inline = InlineThreads()
    throttle = LoginThrottle(per_user=5, per_address=5, window=60.0, clock=clock)
    authenticator = Authenticator(
        {}, Sessions(None, 60.0), reactor=inline, pool=inline.pool, throttle=throttle, clock=clock
    )
    assert not authenticator.enabled
    assert not checked(authenticator, "alice", PASSWORD)


@pytest_twisted.inlineCallbacks
def test_a_session_cookie_or_basic_credentials_authenticate(store):
    """A live session cookie gives a session Principal, valid Basic credentials a basic one, neither None."""
    authenticator, _ = inline_authenticator(_Clock(), store=store)
    token = (yield authenticator.sessions.open("alice")).encode()
    by_cookie = yield authenticator.authenticate(http_request(cookies={SESSION_COOKIE: token}))
    assert by_cookie == Principal("alice", "session", "admin")
    assert principal_of(
        authenticator, http_request(headers=basic_header(f"alice:{PASSWORD}".encode()))
    ) == Principal("alice", "basic", "admin")
    assert principal_of(authenticator, http_request()) is None
    forged = yield authenticator.authenticate(http_request(cookies={SESSION_COOKIE: b"forged"}))
    assert forged is None


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer " + base64.b64encode(f"alice:{PASSWORD}".encode()),
        b"Basic not-base64!",
        b"Basic " + base64.b64encode(b"no colon"),
        b"Basic " + base64.b64encode(b"\xff\xfe:x"),
    ],
)
def test_malformed_authorization_authenticates_nobody(authorization):
    """Another scheme, bad base64, no colon or non-UTF-8 credentials are no credentials: nothing is hashed."""
    authenticator, pool = inline_authenticator(_Clock())
    assert principal_of(authenticator, http_request(headers={b"authorization": authorization})) is None
    assert pool.calls == 0


def test_refused_basic_credentials_are_logged_without_the_password(log_events):
    """Wrong Basic credentials give None and a warning naming the user and the address, never the password."""
    authenticator, _ = inline_authenticator(_Clock())
    request = http_request(headers=basic_header(b"alice:hunter2-not-it"))
    assert principal_of(authenticator, request) is None
    text = logged(log_events)
    assert "Basic credentials refused for user alice from 10.0.0.5" in text
    assert "hunter2" not in text


# -- the gate, over loopback HTTP ------------------------------------------------------------------


class _WhoAmI(JsonResource):
    """Answers GET and POST with the admitted user and the path below the gate."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        principal = authenticated(request)
        return send(request, json_reply({"user": principal.user, "method": principal.method}))

    render_POST = render_GET


class _Failing:
    """An authenticator whose check fails unexpectedly."""

    def authenticate(self, request) -> defer.Deferred:
        return defer.fail(ZeroDivisionError("bug"))


@pytest.fixture
def gated(store):
    """(base URL, sessions) of a loopback server: ``/gated/who`` behind a Gate of ACCOUNTS, ``/broken``."""
    sessions = Sessions(store, 60.0)
    throttle = LoginThrottle(per_user=100, per_address=100, window=60.0, clock=reactor.seconds)
    pool = reactor.getThreadPool()  # the password threads are the WebService's; these tests have none
    authenticator = Authenticator(ACCOUNTS, sessions, reactor=reactor, pool=pool, throttle=throttle)
    wrapped = resource.Resource()
    wrapped.putChild(b"who", _WhoAmI())
    root = resource.Resource()
    root.putChild(b"gated", Gate(wrapped, authenticator, RolePolicy({})))
    root.putChild(b"broken", Gate(_WhoAmI(), _Failing(), RolePolicy({})))
    port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    yield url, sessions
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.inlineCallbacks
def test_the_gate_refuses_requests_without_credentials(gated):
    """Without a session or Basic credentials the answer is 401 in JSON; only scripts are asked for Basic."""
    url, _ = gated
    script = yield in_thread(fetch, f"{url}/gated/who")
    assert script.status == 401
    assert "error" in script.json()
    assert script.header("www-authenticate").startswith("Basic ")
    browser = yield in_thread(fetch, f"{url}/gated/who", headers=BROWSER)
    assert browser.status == 401
    assert browser.header("www-authenticate") is None


@pytest_twisted.inlineCallbacks
def test_the_gate_admits_basic_credentials_and_sessions_to_the_tree_below(gated):
    """Admitted requests reach the tree below the gate, which knows who sent them and how they proved it."""
    url, sessions = gated
    by_script = yield in_thread(fetch, f"{url}/gated/who", headers=basic())
    assert (by_script.status, by_script.json()) == (200, {"user": "alice", "method": "basic"})
    token = yield sessions.open("alice")
    cookie = {"Cookie": f"{SESSION_COOKIE.decode()}={token}"}
    by_browser = yield in_thread(fetch, f"{url}/gated/who", headers=cookie)
    assert (by_browser.status, by_browser.json()) == (200, {"user": "alice", "method": "session"})
    wrong = yield in_thread(fetch, f"{url}/gated/who", headers=basic(password="wrong"))
    assert wrong.status == 401


@pytest_twisted.inlineCallbacks
def test_a_session_may_change_something_only_with_the_browser_header(gated):
    """A POST carried by the session cookie needs X-Requested-With (403 without); a GET does not."""
    url, sessions = gated
    token = yield sessions.open("alice")
    cookie = {"Cookie": f"{SESSION_COOKIE.decode()}={token}"}
    refused = yield in_thread(fetch, f"{url}/gated/who", "POST", headers=cookie)
    assert refused.status == 403
    assert "X-Requested-With" in refused.json()["error"]
    allowed = yield in_thread(fetch, f"{url}/gated/who", "POST", headers={**cookie, **BROWSER})
    assert (allowed.status, allowed.json()["user"]) == (200, "alice")


@pytest_twisted.inlineCallbacks
def test_another_site_may_not_change_anything(gated):
    """A POST with another site's Origin is refused even with Basic credentials; same origin or GET is not."""
    url, _ = gated
    host = url.removeprefix("http://")
    cross = yield in_thread(
        fetch, f"{url}/gated/who", "POST", headers={**basic(), "Origin": "https://evil.example"}
    )
    assert cross.status == 403
    same = yield in_thread(fetch, f"{url}/gated/who", "POST", headers={**basic(), "Origin": f"http://{host}"})
    assert same.status == 200
    read = yield in_thread(fetch, f"{url}/gated/who", headers={**basic(), "Origin": "https://evil.example"})
    assert read.status == 200


@pytest_twisted.inlineCallbacks
def test_an_authenticator_that_fails_is_a_500_and_lets_nobody_in(gated):
    """When authentication itself fails unexpectedly the gate answers 500 and never reaches the tree below."""
    url, _ = gated
    response = yield in_thread(fetch, f"{url}/broken", headers=basic())
    assert (response.status, response.json()) == (500, {"error": "internal error"})


@pytest_twisted.inlineCallbacks
def test_a_session_of_a_user_no_longer_configured_admits_nobody(store):
    """The role is looked up at every request: a session whose user left the config gives no Principal."""
    authenticator, _ = inline_authenticator(_Clock(), store=store)
    token = (yield authenticator.sessions.open("ghost")).encode()
    assert (yield authenticator.authenticate(http_request(cookies={SESSION_COOKIE: token}))) is None


@pytest_twisted.inlineCallbacks
def test_the_session_api_names_the_user_however_they_logged_in(start_web):
    """/api/session answers the authenticated user, for Basic credentials and for a console session alike."""
    web = start_web()
    by_script = yield in_thread(fetch, f"{web.url}/api/session", headers=basic())
    cookie = session_cookie((yield login(web)))
    by_browser = yield in_thread(fetch, f"{web.url}/api/session", headers={**cookie, **BROWSER})
    assert by_script.json() == by_browser.json() == {"user": "alice", "role": "admin"}
