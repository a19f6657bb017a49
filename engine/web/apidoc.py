"""Building blocks of the ``OPENAPI_PATHS`` each API module declares (OpenAPI 3.1 "paths" fragments).

Every operation carries ``x-role``: the least role (engine.web.roles) that may call it. The gate
enforces exactly that, and engine.web.openapi serves the fragments merged into one document.
Plain dictionaries, no Twisted: a module declares its paths at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["ID", "json_response", "operation", "query"]


def json_response(description: str, schema: Mapping | None = None) -> dict:
    """A response object with a JSON body (any JSON unless ``schema`` says more)."""
    return {"description": description, "content": {"application/json": {"schema": dict(schema or {})}}}


_ERRORS = {
    "400": json_response("a parameter the API cannot use; the error names it"),
    "401": {"description": "not logged in"},
    "403": {"description": "the user's role may not do this"},
    "503": {"description": "the store is not available now"},
}


def query(name: str, description: str, *, kind: str = "string") -> dict:
    """An optional query parameter of type ``kind`` (a JSON Schema type)."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


# The ``{id}`` of a path: a row id, 1..2^63-1.
ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the row id",
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}


def operation(
    summary: str,
    role: str,
    *,
    parameters: Sequence[Mapping] = (),
    ok: Mapping | None = None,
    responses: Mapping[str, Mapping] | None = None,
) -> dict:
    """An operation object: what it does, the least ``role`` that may call it, its parameters and answers.

    ``ok`` is the 200 response (JSON by default); ``responses`` adds others (404, 410 ...).
    """
    return {
        "summary": summary,
        "x-role": role,
        "parameters": [dict(parameter) for parameter in parameters],
        "responses": {"200": dict(ok or json_response("OK")), **_ERRORS, **(responses or {})},
    }
