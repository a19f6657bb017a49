"""The OpenAPI 3.1 document of the JSON API, merged from the ``OPENAPI_PATHS`` of every API module.

``API_MODULES`` is the one list of modules that serve routes under the gate: the document served
at ``GET /api/openapi.json`` and the role policy of the gate (engine.web.roles) are both built
from it. A module that adds routes declares ``OPENAPI_PATHS`` and is added here.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from engine.web import alerts, api, audit, auth, channels, configs, messages, nodes, patients, record, trying
from engine.web.apidoc import json_response, operation
from engine.web.auth import SESSION_COOKIE
from engine.web.responses import JsonResource, json_reply, send
from engine.web.roles import VIEWER, RolePolicy

__all__ = ["API_MODULES", "OPENAPI_PATHS", "OpenApiDocument", "document", "paths", "policy"]

OPENAPI_PATHS: dict = {
    "/api/openapi.json": {
        "get": operation(
            "This document: every route of the API with the least role (x-role) that may call it",
            VIEWER,
            ok=json_response("an OpenAPI 3.1 document", {"type": "object"}),
        )
    }
}

API_MODULES: tuple[ModuleType, ...] = (
    messages,
    audit,
    auth,
    nodes,
    api,
    patients,
    configs,
    channels,
    alerts,
    trying,
    record,
)


def paths(modules: Iterable[ModuleType] = API_MODULES) -> dict:
    """The modules' ``OPENAPI_PATHS`` and this module's merged; the same operation twice is a ValueError."""
    merged: dict[str, dict] = {path: dict(item) for path, item in OPENAPI_PATHS.items()}
    for module in modules:
        for path, item in module.OPENAPI_PATHS.items():
            both = merged.setdefault(path, {})
            twice = set(both) & set(item)
            if twice:
                raise ValueError(f"{module.__name__}: {', '.join(sorted(twice))} {path} is declared twice")
            both.update(item)
    return merged


def document(modules: Iterable[ModuleType] = API_MODULES) -> dict:
    """The whole OpenAPI 3.1 document (its version is the API's, 1, not the engine's)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hl7engine",
            "version": "1",
            "description": (
                "The engine's JSON API. Every operation names in x-role the least role that may call"
                " it: viewer < operator < admin."
            ),
        },
        "paths": paths(modules),
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE.decode("ascii")},
            }
        },
        "security": [{"basic": []}, {"session": []}],
    }


def policy(modules: Iterable[ModuleType] = API_MODULES) -> RolePolicy:
    """The gate's role policy: the least role of every documented operation, admin for the rest."""
    return RolePolicy(paths(modules))


class OpenApiDocument(JsonResource):
    """``/api/openapi.json``: the document, built once."""

    isLeaf = True

    def __init__(self, modules: Iterable[ModuleType] = API_MODULES):
        super().__init__()
        self._reply = json_reply(document(modules))

    def render_GET(self, request) -> bytes:
        return send(request, self._reply)
