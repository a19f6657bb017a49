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


# What a viewer sees of a message: these fields, by name. Any other field reads null, so content or
# person data added to the message JSON later stays hidden from viewers until it is listed here.
_METADATA = frozenset(
    {
        "id",
        "received_at",
        "listener",
        "channel",
        "peer",
        "status",
        "type",
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "message_code",
        "trigger_event",
        "message_structure",
        "control_id",
        "version",
        "processing_id",
        "charset",
        "batch_control_id",
        "batch_index",
        "ack_code",
        "error",
        "pruned_at",
    }
)
_DELIVERY_METADATA = frozenset(
    {
        "id",
        "destination",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "superseded_at",
        "response_code",
        "reason",
    }
)
_EVENT_METADATA = frozenset({"id", "at", "status", "detail", "destination"})
# Of each stage (engine.web.stages): which one it is and whose; its text and its fields are content.
_STAGE_METADATA = frozenset({"stage", "destination", "delivery_id"})


def _only(shown: Mapping, allowed: frozenset[str]) -> dict:
    return {name: value if name in allowed else None for name, value in shown.items()}


def without_person_data(summary: Mapping) -> dict:
    """A message summary as a viewer sees it: its metadata; every other field (patient_id ...) null."""
    return _only(summary, _METADATA)


def without_content(message: Mapping) -> dict:
    """A message as a viewer sees it: metadata of it, its deliveries, events and stages; all else null."""
    return {
        **without_person_data(message),
        "deliveries": [_only(delivery, _DELIVERY_METADATA) for delivery in message.get("deliveries", ())],
        "events": [_only(event, _EVENT_METADATA) for event in message.get("events", ())],
        "stages": [_only(stage, _STAGE_METADATA) for stage in message.get("stages") or ()],
        "content_hidden": True,
    }
