"""``GET /api/alerts``: the alert rules of channels.yaml, each with its state (firing or not, when).

    {"alerts": [{"name", "kind", "channel", "destination", "listener", "threshold", "window_minutes",
                 "notify": ["webhook", ...], "firing", "detail", "fired_at", "cleared_at"}]}

The states are read from the store (engine.store.controls), where the process that evaluates the
rules (engine.channels.alerting) keeps them. Names, counts and reasons: never message content.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.channels.alerting import alerts_json
from engine.channels.alertspec import AlertRule
from engine.channels.pausing import Controls
from engine.web.apidoc import operation
from engine.web.responses import JsonResource, error_reply, json_reply, send, serve
from engine.web.roles import VIEWER

__all__ = ["OPENAPI_PATHS", "AlertsApi"]

OPENAPI_PATHS: dict = {
    "/api/alerts": {
        "get": operation("The alert rules with their state: firing or not, last fired and cleared", VIEWER)
    }
}


class AlertsApi(JsonResource):
    """``/api/alerts``: every rule and its stored state."""

    isLeaf = True

    def __init__(self, controls: Controls, rules: Callable[[], Sequence[AlertRule]]):
        super().__init__()
        self._controls = controls
        self._rules = rules

    def render_GET(self, request) -> int | bytes:
        if request.postpath not in ([], [b""]):
            return send(request, error_reply(404, "no such resource"))
        if request.args:
            return send(request, error_reply(400, "/api/alerts takes no parameters"))
        rules = tuple(self._rules())
        d = self._controls.alert_states()
        return serve(request, d.addCallback(lambda states: json_reply(alerts_json(rules, states))))
