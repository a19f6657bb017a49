"""The web server (``engine.http``): health, Prometheus metrics, login, the message API and the console.

    /health            public   JSON; 503 when the store does not answer
    /healthz           public   JSON 200 while the process serves requests (liveness)
    /readyz            public   JSON 200 when the store answers and every listener is bound, else 503
                                with the reason (readiness: send traffic here)
    /metrics           public   Prometheus text: counts and names from the config, never message content
    /login, /logout    public   POST: a form login that sets (or ends) the session cookie
    /, /console/...    public   the console's static page, script and style (they hold no data)
    /api/...           gated    see engine/web/messages.py, audit.py, nodes.py, configs.py, openapi.py;
                                more can be mounted below it
    anything mounted   gated    ``extra_resources`` (e.g. ``api/patients``, ``fhir``)

Every child of the root that is not public sits behind a Gate: a session cookie or HTTP Basic
credentials, else 401; a role below the route's (engine.web.openapi.policy()), else 403. With no
user configured, nothing but /health and /metrics is served.
The access log shows paths without their query strings, which may hold search terms.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import resource
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

from engine.errors import StoreError
from engine.model import utc_now
from engine.store.defaults import DEFAULT_LEASE_SECONDS
from engine.store.driver import store_errors
from engine.web.audit import AuditApi, Auditor
from engine.web.auth import (
    BROWSER_HEADER,
    SESSION_COOKIE,
    Account,
    Authenticator,
    Gate,
    IPrincipal,
    SessionApi,
    Sessions,
    loggable,
    remote_address,
    throttled_reply,
)
from engine.web.configs import ConfigApi
from engine.web.limits import LimitedSite
from engine.web.messages import MessagesApi, QueuesApi
from engine.web.metrics import Metrics
from engine.web.nodes import NodesApi
from engine.web.openapi import OpenApiDocument, policy
from engine.web.responses import JsonResource, Reply, ReplyResource, error_reply, json_reply, send, serve
from engine.web.roles import RolePolicy
from engine.web.throttle import LoginThrottle

if TYPE_CHECKING:
    from engine.config import EngineSettings  # the settings are read, never built, here

__all__ = ["OPENAPI_PATHS", "PUBLIC_NAMES", "WebService", "build_root"]


def _public_probe(summary: str, ready: bool) -> dict:
    answers = {"200": {"description": "alive" if not ready else "ready"}}
    if ready:
        answers["503"] = {"description": "not ready: {status, reason} says why"}
    return {"get": {"summary": summary, "security": [], "responses": answers}}


#: The public routes of this module (no login: ``security: []``); the gated ones are in their modules.
OPENAPI_PATHS: dict = {
    "/health": {
        "get": {
            "summary": "The store answers",
            "security": [],
            "responses": {"200": {"description": "ok"}, "503": {"description": "the store does not answer"}},
        }
    },
    "/healthz": _public_probe("Liveness: the process serves requests", ready=False),
    "/readyz": _public_probe("Readiness: the store answers and every listener is bound", ready=True),
}

log = Logger(namespace="engine.web")

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
CONSOLE_FILES = {
    "console.js": b"text/javascript; charset=utf-8",
    "admin.js": b"text/javascript; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "messages.js": b"text/javascript; charset=utf-8",
    "patients.js": b"text/javascript; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
# The console loads only its own script and style, and talks only to this server.
_CONSOLE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Threads that check passwords: one hash at a time per core we let them have.
PASSWORD_THREADS = 1
# Children of the root that need no login; nothing may be mounted under these names.
PUBLIC_NAMES = frozenset({"", "health", "healthz", "readyz", "metrics", "login", "logout", "console"})


class WebService(service.Service):
    """Serves the web API, console and /metrics on ``settings.http.endpoint`` and polls the queue depths."""

    def __init__(
        self,
        settings: EngineSettings,
        store,
        *,
        reactor,
        metrics: Metrics,
        extra_resources: Mapping[str, resource.Resource] | None = None,
        config_summary: Callable[[], Mapping] | None = None,
        clock: Callable[[], datetime] = utc_now,
        unbound_listeners: Callable[[], list[str]] = list,
        message_actions: Mapping[bytes, Callable] | None = None,
    ):
        """``unbound_listeners``: the names of this process's listeners not bound now (for /readyz)."""
        if settings.http is None:
            raise ValueError("the web service needs engine.http settings")
        self.setName("web")
        self.settings = settings
        self.store = store
        self.reactor = reactor
        self.metrics = metrics
        http = settings.http
        self.sessions = Sessions(store, http.session_minutes * 60.0, clock=clock)
        # Password checks cost CPU on purpose: they get threads of their own, so that a flood of
        # made-up credentials cannot hold up the reactor's pool (file destinations write with it).
        self.password_pool = ThreadPool(minthreads=0, maxthreads=PASSWORD_THREADS, name="web-passwords")
        self.authenticator = Authenticator(
            {name: Account(user.password, user.role) for name, user in http.users.items()},
            self.sessions,
            reactor=reactor,
            pool=self.password_pool,
            throttle=LoginThrottle(
                per_user=http.login_failures_per_user,
                per_address=http.login_failures_per_address,
                window=http.login_window_seconds,
                clock=reactor.seconds,
            ),
            observer=metrics.observe,
        )
        self.auditor = Auditor(store, clock=clock)
        self.root = build_root(
            store=store,
            metrics=metrics,
            authenticator=self.authenticator,
            auditor=self.auditor,
            default_charset=settings.default_charset,
            extra_resources=extra_resources or {},
            config_summary=config_summary,
            unbound_listeners=unbound_listeners,
            lease_seconds=(
                settings.cluster.lease_seconds if settings.cluster is not None else DEFAULT_LEASE_SECONDS
            ),
            message_actions=message_actions,
        )
        self._listening: defer.Deferred | None = None

    def startService(self) -> None:
        super().startService()
        self.password_pool.start()
        http = self.settings.http
        site = LimitedSite(
            self.root,
            max_body_bytes=http.max_body_bytes,
            max_header_bytes=http.max_header_bytes,
            observer=self.metrics.observe,
            logFormatter=_access_line,
            reactor=self.reactor,
        )
        site.displayTracebacks = False  # a traceback may show data; the log has it
        listening = serverFromString(self.reactor, self.settings.http.endpoint).listen(site)
        failures: list[Failure] = []
        listening.addErrback(failures.append)
        if failures:
            # A port that cannot be bound is a start-up error, not something to log and forget.
            self.password_pool.stop()
            failures[0].raiseException()
        self._listening = listening
        self.metrics.start_polling(self.store, clock=self.reactor)
        self.sessions.forget_expired().addErrback(
            lambda failure: log.warn(
                "web: could not delete expired sessions: {error}", error=failure.getErrorMessage()
            )
        )
        host = listening.result.getHost()
        bound = (
            f"port {host.port}" if hasattr(host, "port") else os.fsdecode(host.name)
        )  # a UNIX socket's path
        if self.authenticator.enabled:
            log.info(
                "web: console, API and /metrics on {endpoint} ({bound}), {count} user(s)",
                endpoint=self.settings.http.endpoint,
                bound=bound,
                count=len(self.authenticator.users),
            )
        else:
            log.warn(
                "web: no users in engine.http.users: only /health and /metrics are served on {endpoint}"
                " ({bound}); the API and console refuse every request",
                endpoint=self.settings.http.endpoint,
                bound=bound,
            )

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful with port 0)."""
        return self._listening.result.getHost().port

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        self.metrics.stop_polling()
        if self._listening is not None:
            port = yield self._listening
            self._listening = None
            yield port.stopListening()
        # Waits for a check in progress (a fraction of a second); the queued ones are dropped.
        if not self.password_pool.joined:  # a start that failed to bind has stopped it already
            self.password_pool.stop()


def build_root(
    *,
    store,
    metrics: Metrics,
    authenticator: Authenticator,
    auditor: Auditor,
    default_charset: str,
    extra_resources: Mapping[str, resource.Resource],
    config_summary: Callable[[], Mapping] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    unbound_listeners: Callable[[], list[str]] = list,
    message_actions: Mapping[bytes, Callable] | None = None,
) -> resource.Resource:
    """The resource tree.

    ``message_actions``: more actions below ``/api/messages/{id}/`` (see ``MessagesApi``).

    ``extra_resources`` maps a path (``api/patients``, ``fhir``) to a resource mounted behind the gate;
    ``config_summary`` gives the running config's summary for /api/config; ``lease_seconds``
    (engine.cluster) is the heartbeat age past which /api/nodes calls a node dead.
    """
    root = Directory()
    root.putChild(b"health", _Health(store))
    root.putChild(b"healthz", ReplyResource(json_reply({"status": "alive"})))
    root.putChild(b"readyz", _Ready(store, unbound_listeners))
    root.putChild(b"metrics", _MetricsPage(metrics))
    if not authenticator.enabled:
        root.fallback = ReplyResource(
            error_reply(
                403, "no users are configured (engine.http.users): only /health and /metrics are served"
            )
        )
        return root
    root.putChild(b"", _ConsoleFile(CONSOLE_DIR / "index.html", b"text/html; charset=utf-8"))
    console = Directory()
    for name, content_type in CONSOLE_FILES.items():
        console.putChild(name.encode(), _ConsoleFile(CONSOLE_DIR / name, content_type))
    root.putChild(b"console", console)
    root.putChild(b"login", _Login(authenticator, auditor))
    root.putChild(b"logout", _Logout(authenticator.sessions, auditor))
    api = Directory()
    api.putChild(
        b"messages", MessagesApi(store, auditor, default_charset=default_charset, actions=message_actions)
    )
    api.putChild(b"audit", AuditApi(auditor))
    api.putChild(b"queues", QueuesApi(store))
    api.putChild(b"nodes", NodesApi(store, lease_seconds=lease_seconds))
    api.putChild(b"session", SessionApi())
    api.putChild(b"config", ConfigApi(store, config_summary))
    api.putChild(b"openapi.json", OpenApiDocument())
    roles = policy()
    root.putChild(b"api", Gate(api, authenticator, roles))
    for path, child in extra_resources.items():
        mount(root, path, child, authenticator, roles)
    return root


def mount(
    root: resource.Resource,
    path: str,
    child: resource.Resource,
    authenticator: Authenticator,
    roles: RolePolicy,
) -> None:
    """Put ``child`` at ``path`` (``a/b/c``) behind the gate of its top-level name (made when missing)."""
    parts = path.strip("/").split("/")
    if any(not part for part in parts):
        raise ValueError(f"cannot mount at {path!r}: give a path such as api/patients")
    if parts[0] in PUBLIC_NAMES:
        raise ValueError(f"cannot mount at {path!r}: /{parts[0]} is public")
    names = [part.encode("utf-8") for part in parts]
    gate = root.children.get(names[0])
    if gate is None:
        root.putChild(names[0], Gate(child if len(names) == 1 else Directory(), authenticator, roles))
        if len(names) == 1:
            return
        gate = root.children[names[0]]
    if len(names) == 1 or not isinstance(gate, Gate):
        raise ValueError(f"cannot mount at {path!r}: something is served there already")
    node = gate.wrapped
    for name in names[1:-1]:
        node = node.children.get(name) or _put(node, name, Directory())
    if names[-1] in node.children:
        raise ValueError(f"cannot mount at {path!r}: something is served there already")
    node.putChild(names[-1], child)


def _put(parent: resource.Resource, name: bytes, child: resource.Resource) -> resource.Resource:
    parent.putChild(name, child)
    return child


class Directory(JsonResource):
    """A node of the tree that serves only its children; anything else is a JSON 404 (or ``fallback``)."""

    def __init__(self):
        super().__init__()
        self.fallback: resource.Resource = ReplyResource(error_reply(404, "no such resource"))

    def getChild(self, path: bytes, request) -> resource.Resource:
        return self.fallback

    def render(self, request) -> bytes:
        return self.fallback.render(request)


class _Health(JsonResource):
    """``/health``: 200 when the store answers a trivial query, 503 otherwise."""

    isLeaf = True

    def __init__(self, store):
        super().__init__()
        self._store = store

    def render_GET(self, request) -> int:
        d = defer.maybeDeferred(lambda: self._store.read(_ping, self._store.repository.engine))
        return serve(request, d.addCallback(lambda _: json_reply({"status": "ok"})))


class _Ready(JsonResource):
    """``/readyz``: 200 when the store answers and every listener is bound; 503 with the reason otherwise."""

    isLeaf = True

    def __init__(self, store, unbound_listeners: Callable[[], list[str]]):
        super().__init__()
        self._store = store
        self._unbound_listeners = unbound_listeners

    def render_GET(self, request) -> int:
        d = defer.maybeDeferred(lambda: self._store.read(_ping, self._store.repository.engine))

        def listening(_) -> Reply:
            unbound = self._unbound_listeners()
            if unbound:
                return json_reply(
                    {"status": "not ready", "reason": f"listeners not bound: {', '.join(unbound)}"}, 503
                )
            return json_reply({"status": "ready"})

        def store_down(failure: Failure) -> Reply:
            failure.trap(StoreError)
            return json_reply({"status": "not ready", "reason": "the store does not answer"}, 503)

        return serve(request, d.addCallbacks(listening, store_down))


def _ping(engine: sa.Engine) -> None:
    with store_errors("checking the store"), engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


class _MetricsPage(JsonResource):
    """``/metrics``: the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request) -> bytes:
        body, content_type = self._metrics.exposition()
        return send(request, Reply(200, body, content_type.encode("ascii")))


class _ConsoleFile(JsonResource):
    """One static file of the console, read once at start."""

    isLeaf = True

    def __init__(self, path: Path, content_type: bytes):
        super().__init__()
        self._reply = Reply(
            200, path.read_bytes(), content_type, ((b"content-security-policy", _CONSOLE_POLICY),)
        )

    def render_GET(self, request) -> bytes:
        if request.postpath not in ([], [b""]):
            return send(request, error_reply(404, "no such resource"))
        return send(request, self._reply)


def _form(request, name: str) -> str:
    values = (request.args or {}).get(name.encode(), [b""])
    return values[0].decode("utf-8", "replace")


class _Login(JsonResource):
    """``POST /login`` (form fields ``user``, ``password``): sets the session cookie, or 401."""

    isLeaf = True

    def __init__(self, authenticator: Authenticator, auditor: Auditor):
        super().__init__()
        self._authenticator = authenticator
        self._auditor = auditor

    def render_POST(self, request) -> int:
        if not request.getHeader(BROWSER_HEADER):
            # Without it, another site could log a browser in to an account of its choosing.
            return send(
                request,
                error_reply(
                    403, "a login must carry the X-Requested-With header (scripts: use HTTP Basic instead)"
                ),
            )
        user, password = _form(request, "user"), _form(request, "password")
        d = self._authenticator.check_password(user, password, remote_address(request))
        d.addCallbacks(self._checked, throttled_reply, callbackArgs=(request, user))
        return serve(request, d)

    @defer.inlineCallbacks
    def _checked(self, matches: bool, request, user: str):
        if not matches:
            log.warn(
                "web: login refused for user {user} from {remote}",
                user=loggable(user),
                remote=remote_address(request),
            )
            if user in self._authenticator.users:  # strangers' guesses are logged, not stored
                yield self._auditor.record(request, "login_failed", user=user)
            return error_reply(401, "wrong user name or password")
        yield self._auditor.record(request, "login", user=user)
        token = yield self._authenticator.sessions.open(user)
        role = self._authenticator.users[user].role
        request.addCookie(
            SESSION_COOKIE,
            token.encode("ascii"),
            path=b"/",
            httpOnly=True,
            sameSite="strict",
            secure=request.isSecure(),
        )
        log.info("web: {user} logged in from {remote}", user=user, remote=remote_address(request))
        return json_reply({"user": user, "role": role})


class _Logout(JsonResource):
    """``POST /logout``: ends the session and clears the cookie."""

    isLeaf = True

    def __init__(self, sessions: Sessions, auditor: Auditor):
        super().__init__()
        self._sessions = sessions
        self._auditor = auditor

    def render_POST(self, request) -> int:
        token = request.getCookie(SESSION_COOKIE)
        d = self._sessions.close(token.decode("ascii", "replace")) if token else defer.succeed(None)
        request.addCookie(
            SESSION_COOKIE,
            b"",
            path=b"/",
            max_age=b"0",
            httpOnly=True,
            sameSite="strict",
            secure=request.isSecure(),
        )

        def closed(user: str | None) -> defer.Deferred:
            if user is None:
                return defer.succeed(None)
            return self._auditor.record(request, "logout", user=user)

        return serve(request, d.addCallback(closed).addCallback(lambda _: json_reply({"user": None})))


@provider(IAccessLogFormatter)
def _access_line(timestamp: str, request) -> str:
    """An access log line with the admitted user, without the query (search terms may be patient data)."""
    principal = request.getComponent(IPrincipal)
    user = principal.user if principal is not None else "-"
    path = request.path.decode("utf-8", "backslashreplace")
    method = request.method.decode("ascii", "replace")
    sent = request.sentLength or "-"
    return f'{remote_address(request)} {user} {timestamp} "{method} {path}" {request.code} {sent}'
