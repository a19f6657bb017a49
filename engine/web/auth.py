"""Who may use the web server: sessions, the authenticator, and the gate in front of everything not public.

Users are configured as PBKDF2-SHA256 hashes (``engine.http.users``, made by ``hl7engine
hash-password``). A browser logs in once and carries an HttpOnly, SameSite=Strict session cookie;
a script sends HTTP Basic credentials with every request. Hashing a password costs a fraction of a
second of CPU on purpose, so it runs on a thread, never on the reactor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.util import DeferredResource
from zope.interface import Attribute, Interface

from engine.web.passwords import decoy_hash, verify_password
from engine.web.responses import ReplyResource, error_reply

__all__ = [
    "BROWSER_HEADER",
    "SESSION_COOKIE",
    "Authenticator",
    "Gate",
    "IPrincipal",
    "Principal",
    "Sessions",
    "authenticated",
    "loggable",
    "remote_address",
]

log = Logger(namespace="engine.web")

SESSION_COOKIE = b"hl7engine_session"
# Browsers cannot add a custom header to a cross-site request without asking (CORS preflight):
# a POST carried by a session cookie must have it, which stops cross-site request forgery even in
# a browser that ignores SameSite. It also tells the gate not to ask for Basic credentials, which
# would make the browser pop up its own login dialog over the console.
BROWSER_HEADER = b"x-requested-with"


# ---------------------------------------------------------------------------------------------------------
# Sessions and authentication


@dataclass(slots=True)
class _Session:
    user: str
    expires_at: float


class Sessions:
    """Browser sessions in memory: an unguessable token per login, ending ``lifetime`` seconds unused."""

    def __init__(self, lifetime: float, *, clock: Callable[[], float]):
        self.lifetime = lifetime
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def open(self, user: str) -> str:
        """Start a session for ``user``; returns its token (a new one at every login: no session fixation)."""
        self._forget_expired()
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(user, self._clock() + self.lifetime)
        return token

    def user_of(self, token: str) -> str | None:
        """The user of a live session (and keep it alive), or None."""
        session = self._sessions.get(token)
        now = self._clock()
        if session is None or session.expires_at <= now:
            self._sessions.pop(token, None)
            return None
        session.expires_at = now + self.lifetime
        return session.user

    def close(self, token: str) -> str | None:
        """End a session; returns its user, or None when there was none."""
        session = self._sessions.pop(token, None)
        return None if session is None or session.expires_at <= self._clock() else session.user

    def _forget_expired(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[token]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request was admitted for, and how they proved it (``session`` or ``basic``)."""

    user: str
    method: str


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
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return str(host if host is not None else address)


def loggable(user: str) -> str:
    """A user name as typed, safe to log: printable and short."""
    return "".join(c if c.isprintable() else "?" for c in user[:100])


class Authenticator:
    """Turns a request's session cookie or HTTP Basic credentials into a Principal (or None)."""

    def __init__(
        self,
        users: Mapping[str, str],
        sessions: Sessions,
        *,
        reactor,
        clock: Callable[[], float] | None = None,
    ):
        self.users = dict(users)
        self.sessions = sessions
        self._reactor = reactor
        self._clock = clock or reactor.seconds
        # An unknown user costs as much as a known one, so timing does not tell which names exist.
        self._decoy = decoy_hash(self.users.values())
        # Scripts send Basic credentials with every request; hashing each time would cost a CPU
        # fraction of a second per request. A keyed digest of credentials that verified is kept
        # for a session lifetime instead (the key never leaves this process).
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[bytes, float]] = {}

    @property
    def enabled(self) -> bool:
        """False when no user is configured: then nobody gets in."""
        return bool(self.users)

    def check_password(self, user: str, password: str) -> defer.Deferred:
        """Fires with True when the password is the user's (hashing on a thread)."""
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(user)
        if cached is not None and cached[1] > self._clock() and hmac.compare_digest(cached[0], digest):
            return defer.succeed(True)
        encoded = self.users.get(user)
        d = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), verify_password, password, encoded or self._decoy
        )

        def checked(matches: bool) -> bool:
            if matches and encoded is not None:
                self._verified[user] = (digest, self._clock() + self.sessions.lifetime)
                return True
            return False

        return d.addCallback(checked)

    def authenticate(self, request) -> defer.Deferred:
        """Fires with the Principal of the request's session cookie or Basic credentials, or None."""
        token = request.getCookie(SESSION_COOKIE)
        if token:
            user = self.sessions.user_of(token.decode("ascii", "replace"))
            if user is not None:
                return defer.succeed(Principal(user, "session"))
        credentials = _basic_credentials(request)
        if credentials is None:
            return defer.succeed(None)
        user, password = credentials
        d = self.check_password(user, password)

        def decided(matches: bool) -> Principal | None:
            if matches:
                return Principal(user, "basic")
            log.warn(
                "web: Basic credentials refused for user {user} from {remote}",
                user=loggable(user),
                remote=remote_address(request),
            )
            return None

        return d.addCallback(decided)


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
    """Lets a request reach the wrapped tree only with a live session or valid Basic credentials, else 401.

    Authentication may need a thread (hashing), so the gate answers with a DeferredResource that
    resumes the traversal below ``wrapped`` once the user is known, as twisted.web.guard does.
    """

    def __init__(self, wrapped: resource.Resource, authenticator: Authenticator):
        super().__init__()
        self.wrapped = wrapped
        self._authenticator = authenticator

    def getChildWithDefault(self, path: bytes, request) -> resource.Resource:
        request.postpath.insert(0, request.prepath.pop())
        return self._admitted(request)

    def render(self, request):
        return self._admitted(request).render(request)

    def _admitted(self, request) -> resource.Resource:
        d = self._authenticator.authenticate(request)

        def decide(principal: Principal | None) -> resource.Resource:
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
            request.setComponent(IPrincipal, principal)
            return self.wrapped

        def failed(failure: Failure) -> resource.Resource:
            log.failure("web: authentication failed unexpectedly", failure)
            return ReplyResource(error_reply(500, "internal error"))

        return DeferredResource(d.addCallbacks(decide, failed))
