"""Who may use the web server: sessions, the authenticator, and the gate in front of everything not public.

Users are configured as PBKDF2-SHA256 hashes (``engine.http.users``, made by ``hl7engine
hash-password``), each with a role that the gate checks against the route's (engine.web.roles).
A browser logs in once and carries an HttpOnly, SameSite=Strict session cookie; a script sends
HTTP Basic credentials with every request. Hashing a password costs a fraction of a second of CPU
on purpose, so it runs on a thread, never on the reactor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.util import DeferredResource
from zope.interface import Attribute, Interface

from engine.errors import StoreError
from engine.model import utc_now
from engine.store.sessions import SessionRepository
from engine.web.apidoc import json_response, operation
from engine.web.passwords import decoy_hash, verify_password
from engine.web.responses import (
    UNAVAILABLE,
    JsonResource,
    Reply,
    ReplyResource,
    error_reply,
    json_reply,
    send,
)
from engine.web.roles import VIEWER, RolePolicy, may
from engine.web.throttle import LoginThrottle, LoginThrottled

__all__ = [
    "BROWSER_HEADER",
    "MAX_WAITING_CHECKS",
    "OPENAPI_PATHS",
    "Account",
    "SESSION_COOKIE",
    "Authenticator",
    "Gate",
    "IPrincipal",
    "Principal",
    "SessionApi",
    "Sessions",
    "address_text",
    "authenticated",
    "loggable",
    "remote_address",
    "throttled_reply",
]

log = Logger(namespace="engine.web")

SESSION_COOKIE = b"hl7engine_session"
# Browsers cannot add a custom header to a cross-site request without asking (CORS preflight):
# a POST carried by a session cookie must have it, which stops cross-site request forgery even in
# a browser that ignores SameSite. It also tells the gate not to ask for Basic credentials, which
# would make the browser pop up its own login dialog over the console.
BROWSER_HEADER = b"x-requested-with"
# Password checks waiting for the password threads at most; more are refused at once (429), so
# a flood of made-up credentials queues no unbounded work.
MAX_WAITING_CHECKS = 32


# ---------------------------------------------------------------------------------------------------------
# Sessions and authentication


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Sessions:
    """Browser sessions in the store: an unguessable token per login, ending ``lifetime`` seconds unused.

    Only the SHA-256 of a token is stored, so sessions survive a restart and the table holds
    nothing that works as a cookie. A use extends the session; the store is written for it at
    most once per ``lifetime / 10`` (a minute at most), not at every request.
    """

    def __init__(self, store, lifetime: float, *, clock: Callable[[], datetime] = utc_now):
        self.lifetime = lifetime
        self._store = store
        self._clock = clock
        self._touch = timedelta(seconds=min(60.0, lifetime / 10))
        self._repository: SessionRepository | None = None

    @property
    def repository(self) -> SessionRepository:
        """The blocking SessionRepository on the store's database (the store must be started)."""
        if self._repository is None:
            self._repository = SessionRepository(self._store.repository.engine)
        return self._repository

    def open(self, user: str) -> defer.Deferred:
        """Start a session for ``user``; fires with its token (new at every login: no session fixation)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        d = self._store.write(
            self.repository.open,
            token_sha256=_token_digest(token),
            user=user,
            now=now,
            expires_at=now + timedelta(seconds=self.lifetime),
        )
        return d.addCallback(lambda _: token)

    def user_of(self, token: str) -> defer.Deferred:
        """Fires with the user of a live session (and keeps it alive), or None; an expired one is deleted."""
        digest = _token_digest(token)

        def found(session) -> Any:
            now = self._clock()
            if session is None:
                return None
            if session.expires_at <= now:
                return self._store.write(self.repository.close, digest).addCallback(lambda _: None)
            renewed = now + timedelta(seconds=self.lifetime)
            if renewed - session.expires_at < self._touch:
                return session.user
            d = self._store.write(self.repository.extend, digest, renewed)
            return d.addCallback(lambda _: session.user)

        return self._store.read(self.repository.find, digest).addCallback(found)

    def close(self, token: str) -> defer.Deferred:
        """End a session; fires with its user, or None when there was no live one."""
        now = self._clock()
        d = self._store.write(self.repository.close, _token_digest(token))
        return d.addCallback(lambda found: None if found is None or found.expires_at <= now else found.user)

    def forget_expired(self) -> defer.Deferred:
        """Delete every expired session; fires with how many."""
        return self._store.write(self.repository.forget_expired, self._clock())


@dataclass(frozen=True, slots=True)
class Account:
    """A user who may log in: the hash of their password and their role (engine.web.roles)."""

    password: str
    role: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request was admitted for, with which role, and how they proved it (``session`` or ``basic``)."""

    user: str
    method: str
    role: str


class IPrincipal(Interface):
    """The Principal the gate admitted a request for (a component of the request)."""

    user = Attribute("the user name")


def authenticated(request) -> Principal:
    """The Principal of a request that passed the gate; every resource behind it may rely on this."""
    principal = request.getComponent(IPrincipal)
    if principal is None:
        raise RuntimeError("authenticated() called for a request that did not pass the gate")
    return principal


def remote_address(request) -> str:
    """The client's address as the server saw it.

    Forwarded-for headers are not trusted: anyone can write them.
    """
    return address_text(request.getClientAddress())


def address_text(address) -> str:
    """A peer address as logged and audited: its host, or the whole address when it has none (UNIX)."""
    host = getattr(address, "host", None)
    return str(host if host is not None else address)


def loggable(user: str) -> str:
    """A user name as typed, safe to log: printable and short."""
    return "".join(c if c.isprintable() else "?" for c in user[:100])


class Authenticator:
    """Turns a request's session cookie or HTTP Basic credentials into a Principal (or None).

    Password checks run on ``pool``, the web server's own threads (never the reactor's shared
    pool, which file destinations and others write with), behind the ``throttle``'s limits.
    ``observer`` is told of every refused login: ``("login_refused", {"reason": ...})`` with
    ``password``, ``user``, ``address`` or ``checks`` (too many checks waiting).
    """

    def __init__(
        self,
        users: Mapping[str, Account],
        sessions: Sessions,
        *,
        reactor,
        pool,
        throttle: LoginThrottle,
        clock: Callable[[], float] | None = None,
        max_waiting: int = MAX_WAITING_CHECKS,
        observer: Callable[[str, Mapping[str, Any]], None] | None = None,
    ):
        self.users = dict(users)
        self.sessions = sessions
        self.throttle = throttle
        self._reactor = reactor
        self._pool = pool
        self._clock = clock or reactor.seconds
        self._max_waiting = max_waiting
        self._waiting = 0
        self._busy = False  # refusing checks because too many wait (logged once until they drain)
        self._observer = observer or (lambda event, fields: None)
        # An unknown user costs as much as a known one, so timing does not tell which names exist.
        self._decoy = decoy_hash(account.password for account in self.users.values())
        # Scripts send Basic credentials with every request; hashing each time would cost a CPU
        # fraction of a second per request. A keyed digest of credentials that verified is kept
        # for a session lifetime instead (the key never leaves this process).
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, float]] = {}

    @property
    def enabled(self) -> bool:
        """False when no user is configured: then nobody gets in."""
        return bool(self.users)

    def check_password(self, user: str, password: str, address: str) -> defer.Deferred:
        """Fires with True when the password is the user's (hashing on the password threads).

        Fails with LoginThrottled, without checking, when a limit is reached (logged and counted).
        """
        try:
            attempt = self.throttle.admit(user, address)
        except LoginThrottled as throttled:
            return self._throttled(throttled, user, address)
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(user)
        if cached is not None and cached[1] > self._clock() and hmac.compare_digest(cached[0], digest):
            self.throttle.settle(attempt, matched=True)
            return defer.succeed(True)
        if self._waiting >= self._max_waiting:
            self.throttle.cancel(attempt)  # not a guess: nothing was checked
            first, self._busy = not self._busy, True
            return self._throttled(LoginThrottled("checks", 1, first=first), user, address)
        account = self.users.get(user)
        encoded = account.password if account is not None else None
        self._waiting += 1
        d = deferToThreadPool(self._reactor, self._pool, verify_password, password, encoded or self._decoy)

        def checked(matches: bool) -> bool:
            matched = matches and encoded is not None
            self.throttle.settle(attempt, matched=matched)
            if matched:
                self._verified[user] = (digest, self._clock() + self.sessions.lifetime)
            else:
                self._refused("password")
            return matched

        def done(result):
            self._waiting -= 1
            self._busy = self._busy and self._waiting > 0
            if isinstance(result, Failure):
                self.throttle.cancel(attempt)
            return result

        return d.addBoth(done).addCallback(checked)

    def _refused(self, reason: str) -> None:
        self._observer("login_refused", {"reason": reason})

    def _throttled(self, throttled: LoginThrottled, user: str, address: str) -> defer.Deferred:
        self._refused(throttled.limit)
        if throttled.first:  # once per lockout; the rest are counted only
            log.warn(
                "web: logins refused for {seconds} s: too many failures for the {limit}"
                " (user {user} from {remote})",
                seconds=throttled.retry_after,
                limit=throttled.limit,
                user=loggable(user),
                remote=address,
            )
        return defer.fail(throttled)

    def authenticate(self, request) -> defer.Deferred:
        """Fires with the Principal of the request's session cookie or Basic credentials, or None.

        Fails with LoginThrottled when Basic credentials cannot be checked now.
        """
        token = request.getCookie(SESSION_COOKIE)
        d = (
            self.sessions.user_of(token.decode("ascii", "replace"))
            if token and len(token) <= 100
            else defer.succeed(None)
        )
        return d.addCallback(self._by_session_or_basic, request)

    def _principal(self, user: str, method: str) -> Principal | None:
        # The role is the configured one now, not the one at login: a session of a user removed
        # from the config admits nobody.
        account = self.users.get(user)
        return Principal(user, method, account.role) if account is not None else None

    def _by_session_or_basic(self, user: str | None, request) -> Any:
        if user is not None:
            return self._principal(user, "session")
        credentials = _basic_credentials(request)
        if credentials is None:
            return None
        user, password = credentials
        remote = remote_address(request)
        d = self.check_password(user, password, remote)

        def decided(matches: bool) -> Principal | None:
            if matches:
                return self._principal(user, "basic")
            log.warn(
                "web: Basic credentials refused for user {user} from {remote}",
                user=loggable(user),
                remote=remote,
            )
            return None

        return d.addCallback(decided)


def throttled_reply(failure: Failure) -> Reply:
    """429 with Retry-After for a LoginThrottled failure; any other failure passes through."""
    failure.trap(LoginThrottled)
    retry_after = failure.value.retry_after
    return error_reply(
        429,
        f"too many login attempts; try again in {retry_after} s",
        headers=((b"retry-after", str(retry_after).encode("ascii")),),
    )


def _basic_credentials(request) -> tuple[str, str] | None:
    header = request.getHeader(b"authorization")
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, separator, password = (
            base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if separator else None


# ---------------------------------------------------------------------------------------------------------
# The gate


_SAFE_METHODS = (b"GET", b"HEAD")


def _cross_site(request) -> bool:
    """Whether a browser says the request comes from a page of another origin (scripts send no Origin)."""
    origin = request.getHeader(b"origin")
    if origin is None:
        return False
    return (
        urlsplit(origin.decode("latin-1")).netloc.lower()
        != (request.getHeader(b"host") or b"").decode("latin-1").lower()
    )


class Gate(resource.Resource):
    """Lets a request reach the wrapped tree only for a user who logged in and whose role may use it.

    No live session nor valid Basic credentials: 401. A role below the one the ``policy`` gives
    the method and path (engine.web.roles): 403. Authentication may need a thread (hashing), so
    the gate answers with a DeferredResource that resumes the traversal below ``wrapped`` once the
    user is known, as twisted.web.guard does.
    """

    def __init__(self, wrapped: resource.Resource, authenticator: Authenticator, policy: RolePolicy):
        super().__init__()
        self.wrapped = wrapped
        self._authenticator = authenticator
        self._policy = policy

    def getChildWithDefault(self, path: bytes, request) -> resource.Resource:
        request.postpath.insert(0, request.prepath.pop())
        return self._admitted(request)

    def render(self, request):
        return self._admitted(request).render(request)

    def _admitted(self, request) -> resource.Resource:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        segments = [segment.decode("utf-8", "replace") for segment in request.prepath + request.postpath]
        d = self._authenticator.authenticate(request)

        def decide(principal: Principal | None) -> resource.Resource:
            if gone:
                # The client left while its password was checked: nothing to answer, nothing to serve.
                return _Abandoned()
            if principal is None:
                # A browser (the console) handles a 401 itself; only a script is asked for Basic credentials.
                challenge = (
                    ()
                    if request.getHeader(BROWSER_HEADER)
                    else ((b"www-authenticate", b'Basic realm="hl7engine", charset="UTF-8"'),)
                )
                return ReplyResource(
                    error_reply(
                        401, "log in first (POST /login), or send HTTP Basic credentials", headers=challenge
                    )
                )
            if request.method not in _SAFE_METHODS:
                if principal.method == "session" and not request.getHeader(BROWSER_HEADER):
                    return ReplyResource(
                        error_reply(
                            403,
                            "a browser request that changes something must carry the X-Requested-With header",
                        )
                    )
                if _cross_site(request):
                    # A browser also sends Basic credentials it remembers along with a cross-site form.
                    return ReplyResource(
                        error_reply(403, "a request from another site may not change anything here")
                    )
            method = request.method.decode("ascii", "replace")
            needed = self._policy.needed(method, segments)
            if not may(principal.role, needed):
                return ReplyResource(
                    error_reply(
                        403, f"the {principal.role} role may not {method} this resource: it needs {needed}"
                    )
                )
            request.setComponent(IPrincipal, principal)
            return self.wrapped

        def failed(failure: Failure) -> resource.Resource:
            if gone:
                return _Abandoned()
            if failure.check(LoginThrottled):
                return ReplyResource(throttled_reply(failure))
            if failure.check(StoreError):
                log.warn("web: could not read the session: {error}", error=failure.getErrorMessage())
                return ReplyResource(UNAVAILABLE)
            log.failure("web: authentication failed unexpectedly", failure)
            return ReplyResource(error_reply(500, "internal error"))

        return DeferredResource(d.addCallbacks(decide, failed))


class _Abandoned(resource.Resource):
    """What a request whose client has gone is given: it renders nothing (the connection is closed)."""

    isLeaf = True

    def render(self, request) -> object:
        return NOT_DONE_YET


class SessionApi(JsonResource):
    """``/api/session``: who the request is authenticated as (the console asks on load)."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        principal = authenticated(request)
        return send(request, json_reply({"user": principal.user, "role": principal.role}))


OPENAPI_PATHS: dict = {
    "/api/session": {
        "get": operation(
            "Who the request is authenticated as, and their role",
            VIEWER,
            ok=json_response("{user, role}", {"type": "object"}),
        )
    },
}
