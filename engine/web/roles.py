"""Who may do what behind the gate: three roles and the one policy that maps each route to the least of them.

    viewer     counts and metadata: no message content, no person data
    operator   what a viewer may, and message content, resend, reprocess, pause and resume, patients
    admin      everything: users, the configuration, the audit trail

The policy is built from the ``OPENAPI_PATHS`` of the API modules (each operation's ``x-role``),
so the document that describes a route and the check that guards it cannot disagree. A route the
policy does not know needs ``admin``: a new resource mounted without a declared role is safe
until someone says who may use it. No Twisted here: the config and the tests use it as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "OPERATOR",
    "ROLES",
    "VIEWER",
    "RolePolicy",
    "Route",
    "may",
    "without_content",
    "without_person_data",
]

VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each includes the ones before it
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_TEMPLATE = re.compile(r"\{[^{}/]+\}")


def may(role: str, needed: str) -> bool:
    """Whether ``role`` includes ``needed`` (an unknown role includes nothing)."""
    return role in _RANK and _RANK[role] >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the API: its method (upper case), path template and the least role it needs."""

    method: str
    path: str
    role: str

    def matches(self, method: str, segments: Sequence[str]) -> bool:
        """Whether a request's method and path segments (decoded, no empty ones) are this route's."""
        template = [part for part in self.path.split("/") if part]
        if self.method != method or len(template) != len(segments):
            return False
        return all(_TEMPLATE.fullmatch(part) or part == segment for part, segment in zip(template, segments))


class RolePolicy:
    """The least role of every known route; ``admin`` for any other."""

    def __init__(self, paths: Mapping[str, Mapping]):
        routes = []
        for path, item in paths.items():
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                role = operation.get("x-role")
                if role not in _RANK:
                    raise ValueError(f"{method.upper()} {path}: x-role must be one of {', '.join(ROLES)}")
                routes.append(Route(method.upper(), path, role))
        # A literal segment wins over a template: /api/config/history before /api/config/{anything}.
        self.routes = tuple(sorted(routes, key=_templated_segments))

    def needed(self, method: str, segments: Iterable[str]) -> str:
        """The least role for ``method`` (HEAD as GET) on the path made of ``segments``."""
        method = "GET" if method == "HEAD" else method
        parts = [segment for segment in segments if segment]  # the resources read a/b/ and a//b as a/b
        for route in self.routes:
            if route.matches(method, parts):
                return route.role
        return ADMIN


def _templated_segments(route: Route) -> tuple[bool, ...]:
    return tuple(bool(_TEMPLATE.fullmatch(part)) for part in route.path.split("/") if part)


# The message fields that hold content (the bytes received, made, sent or answered): an operator's only.
_CONTENT = ("raw", "ack", "transformed")
_DELIVERY_CONTENT = ("payload", "response")
# What names a person in a message's metadata.
_PERSON = ("patient_id",)


def without_person_data(summary: Mapping) -> dict:
    """A message summary as a viewer sees it: no field that names a person (they read null)."""
    return {**summary, **dict.fromkeys(_PERSON)}


def without_content(message: Mapping) -> dict:
    """A message as a viewer sees it: its metadata, with every content field and person data null."""
    shown = without_person_data(message)
    shown.update(dict.fromkeys(_CONTENT))
    shown["deliveries"] = [
        {**delivery, **dict.fromkeys(_DELIVERY_CONTENT)} for delivery in message.get("deliveries", ())
    ]
    shown["content_hidden"] = True
    return shown
