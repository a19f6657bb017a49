"""The dashboard's API: listeners, channels and destinations with their counts and state; pause and resume.

    GET  /api/channels?window=5m|1h|24h          viewer    every channel and destination, counted
    GET  /api/listeners?window=...               viewer    every listener: bound, connections, received
    POST /api/channels/{name}/pause|resume       operator  every destination of the channel
    POST /api/channels/{name}/destinations/{destination}/pause|resume   operator

Counts come from the store (engine.store.dashboard), so they survive a restart and agree across
the nodes sharing it; the state of listeners is this process's. Names, counts, times and reasons
(codes and causes, engine.channels.destinations.policy): never message content. A pause is
written to the store (engine.store.controls), audited, and applied by every process within about
a second; this process's ``PauseWatch`` reads it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from twisted.internet import defer

from engine.channels.overview import DEFAULT_WINDOW, WINDOWS, Overview, channels_json, listeners_json
from engine.channels.pausing import Controls
from engine.model import utc_now
from engine.store.reads import DashboardCounts
from engine.web.apidoc import operation
from engine.web.audit import Auditor
from engine.web.auth import authenticated
from engine.web.responses import JsonResource, Reply, error_reply, json_reply, send, serve

__all__ = [
    "OPENAPI_PATHS",
    "ChannelsApi",
    "ListenersApi",
    "dashboard_resources",
    "window_of",
]


def window_of(request) -> tuple[str, timedelta] | Reply:
    """The ``window`` parameter (default 1h) and its length, or the 400 to send."""
    args = request.args or {}
    unknown = sorted(name.decode("utf-8", "replace") for name in args if name != b"window")
    if unknown:
        return error_reply(400, f"unknown parameter(s): {', '.join(unknown)}")
    name = args.get(b"window", [DEFAULT_WINDOW.encode()])[-1].decode("utf-8", "replace")
    if name not in WINDOWS:
        return error_reply(400, f"window must be one of {', '.join(WINDOWS)}")
    return name, WINDOWS[name]


class _Dashboard(JsonResource):
    """What both GET resources share: the overview, the counts over the window, the pauses.

    Subclasses give ``document(overview, counts, pauses, window_name)``, the JSON body.
    """

    isLeaf = True

    def __init__(
        self, controls: Controls, overview: Callable[[], Overview], *, clock: Callable[[], datetime]
    ):
        super().__init__()
        self._controls = controls
        self._overview = overview
        self._clock = clock

    @defer.inlineCallbacks
    def gather(self, window: timedelta):
        """Fires with (overview, counts, pauses)."""
        overview = self._overview()
        queues = [(c.name, d.name) for c in overview.channels for d in c.destinations]
        counts = yield self._controls.counts(self._clock() - window, queues)
        pauses = yield self._controls.pauses()
        return overview, counts, pauses

    def document(self, overview: Overview, counts: DashboardCounts, pauses, window_name: str) -> dict:
        """The JSON body of a GET."""
        raise NotImplementedError

    def render_GET(self, request) -> int | bytes:
        if request.postpath not in ([], [b""]):
            return send(request, error_reply(404, "no such resource"))
        window = window_of(request)
        if isinstance(window, Reply):
            return send(request, window)
        name, length = window
        d = self.gather(length)
        return serve(request, d.addCallback(lambda got: json_reply(self.document(*got, name))))


class ListenersApi(_Dashboard):
    """``GET /api/listeners``: every listener of this process, with what it received in the window."""

    def document(self, overview: Overview, counts: DashboardCounts, pauses, window_name: str) -> dict:
        return listeners_json(overview, counts, window_name)


class ChannelsApi(_Dashboard):
    """``/api/channels``: the channels counted (GET), and pausing or resuming them (POST)."""

    def __init__(
        self,
        controls: Controls,
        overview: Callable[[], Overview],
        auditor: Auditor,
        *,
        clock: Callable[[], datetime],
        paused: Callable[[], None] = lambda: None,
    ):
        """``paused()`` is told once a pause or resume is written (this process applies it at once)."""
        super().__init__(controls, overview, clock=clock)
        self._auditor = auditor
        self._paused = paused

    def document(self, overview: Overview, counts: DashboardCounts, pauses, window_name: str) -> dict:
        return channels_json(overview, counts, pauses, window_name)

    def render_POST(self, request) -> int | bytes:
        path = [part.decode("utf-8", "replace") for part in request.postpath]
        if len(path) == 2:
            channel, action = path
            destination = ""
        elif len(path) == 4 and path[1] == "destinations":
            channel, _, destination, action = path
        else:
            return send(request, error_reply(404, "no such resource"))
        if action not in ("pause", "resume"):
            return send(request, error_reply(404, "no such resource"))
        if request.args:
            return send(request, error_reply(400, f"{action} takes no parameters"))
        known = {c.name: {d.name for d in c.destinations} for c in self._overview().channels}
        if channel not in known:
            return send(request, error_reply(404, f"no channel {channel!r}"))
        if destination and destination not in known[channel]:
            return send(request, error_reply(404, f"channel {channel!r} has no destination {destination!r}"))
        return serve(request, self._change(request, action, channel, destination))

    @defer.inlineCallbacks
    def _change(self, request, action: str, channel: str, destination: str):
        what = f"channel={channel}" + (f" destination={destination}" if destination else "")
        yield self._auditor.record(request, action, detail=what)
        if action == "pause":
            changed = yield self._controls.pause(channel, destination, by=authenticated(request).user)
        else:
            changed = (yield self._controls.resume(channel, destination)) is not None
        self._paused()
        return json_reply(
            {"channel": channel, "destination": destination or None, "action": action, "changed": changed}
        )


def dashboard_resources(
    controls: Controls,
    overview: Callable[[], Overview],
    auditor: Auditor,
    *,
    paused: Callable[[], None] = lambda: None,
    clock: Callable[[], datetime] = utc_now,
) -> dict[str, JsonResource]:
    """The dashboard's resources by the path they are mounted at (behind the login)."""
    return {
        "api/channels": ChannelsApi(controls, overview, auditor, clock=clock, paused=paused),
        "api/listeners": ListenersApi(controls, overview, clock=clock),
    }


_WINDOW = {
    "name": "window",
    "in": "query",
    "schema": {"type": "string", "enum": list(WINDOWS), "default": "1h"},
}


def _operation(summary: str, role: str, *, post: bool = False) -> dict:
    return operation(summary, role, parameters=() if post else (_WINDOW,))


_NAME = {"in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI_PATHS: dict = {
    "/api/channels": {
        "get": _operation(
            "Every channel and destination with its counts over the window, queue and pause", "viewer"
        )
    },
    "/api/listeners": {"get": _operation("Every listener: bound, connections, messages received", "viewer")},
    "/api/channels/{name}/{action}": {
        "parameters": [
            {"name": "name", **_NAME},
            {"name": "action", **_NAME, "schema": {"enum": ["pause", "resume"]}},
        ],
        "post": _operation(
            "Pause or resume every destination of a channel (the queues keep filling)", "operator", post=True
        ),
    },
    "/api/channels/{name}/destinations/{destination}/{action}": {
        "parameters": [
            {"name": "name", **_NAME},
            {"name": "destination", **_NAME},
            {"name": "action", **_NAME, "schema": {"enum": ["pause", "resume"]}},
        ],
        "post": _operation(
            "Pause or resume one destination; resuming a halted queue retries its failed delivery first",
            "operator",
            post=True,
        ),
    },
}
