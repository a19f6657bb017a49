"""``GET /api/nodes``: the engine processes sharing the store, what each holds, and the work nobody holds.

    {"at": ISO time, "lease_seconds": 10.0,
     "nodes": [{"id", "name", "host", "pid", "roles": [...], "wake_address", "started_at",
                "heartbeat_at", "stopped_at", "state": "alive"|"stopped"|"dead", "heartbeat_age",
                "leases": [{"key", "token", "acquired_at", "expires_at", "expired"}]}],
     "unheld": ["channel:lab", ...]}

Read from the store's ``nodes`` and ``leases`` tables (engine.store.cluster) on its read pool. A
node is dead when its heartbeat is older than ``lease_seconds`` and it never said it stopped;
nodes gone for more than a day are left out. Names only: nothing here comes from a message.
"""

from __future__ import annotations

from engine.store.reads import ClusterView
from engine.web.apidoc import json_response, operation
from engine.web.responses import JsonResource, Reply, error_reply, json_reply, send, serve
from engine.web.roles import VIEWER

__all__ = ["OPENAPI_PATHS", "NodesApi"]

OPENAPI_PATHS: dict = {
    "/api/nodes": {
        "get": operation(
            "The engine processes sharing the store, their state and leases, and the unheld work",
            VIEWER,
            ok=json_response("{at, lease_seconds, nodes, unheld}", {"type": "object"}),
        )
    }
}


class NodesApi(JsonResource):
    """``/api/nodes``: every node with its leases, and the keys of unheld work."""

    isLeaf = True

    def __init__(self, store, *, lease_seconds: float):
        super().__init__()
        self._store = store
        self._lease_seconds = lease_seconds

    def render_GET(self, request) -> int | bytes:
        if request.postpath not in ([], [b""]):
            return send(request, error_reply(404, "no such resource"))
        if request.args:
            return send(request, error_reply(400, "/api/nodes takes no parameters"))
        d = self._store.cluster_view(lease_seconds=self._lease_seconds)
        return serve(request, d.addCallback(_reply))


def _reply(view: ClusterView) -> Reply:
    return json_reply(view.to_json_dict())
