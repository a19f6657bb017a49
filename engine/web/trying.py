"""``POST /api/messages/{id}/try[?channel=]``: what a channel would make of a stored message, nothing stored.

The message's own channel by default, or the one named. The answer is ``Trial.as_dict()``
(``engine.channels.trial``): accepted or not (why), filtered or failed (why), and per destination
the fields its output changes. It shows content, so it needs the operator role and is audited
(action ``try``) before it is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet import defer

from engine.channels.trial import Trial
from engine.web.apidoc import ID, json_response, operation, query
from engine.web.responses import JsonResource, error_reply, json_reply
from engine.web.roles import OPERATOR

__all__ = ["OPENAPI_PATHS", "TryApi"]

#: Runs a trial with the engine's current config: (channel name, raw bytes) -> Trial; KeyError: no channel.
TrialRunner = Callable[[str, bytes], Trial]

_CHANGE = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "examples": ["PID-5.1", "PID-3[2].1", "OBX[2]-5"]},
        "kind": {"enum": ["changed", "added", "removed"]},
        "name": {"type": ["string", "null"], "examples": ["Patient Name / Family Name"]},
        "old": {"type": "string"},
        "new": {"type": "string"},
    },
}
_DESTINATION = {
    "type": "object",
    "properties": {
        "destination": {"type": "string"},
        "outcome": {"enum": ["queued", "filtered", "failed"]},
        "reason": {"type": "string"},
        "changes": {"type": "array", "items": _CHANGE},
        "output": {"type": ["string", "null"]},
    },
}
_TRIAL = {
    "type": "object",
    "properties": {
        "channel": {"type": "string"},
        "outcome": {"enum": ["accepted", "not accepted", "filtered", "failed"]},
        "reason": {"type": "string"},
        "control_id": {"type": "string"},
        "message_type": {"type": "string"},
        "version": {"type": "string"},
        "destinations": {"type": "array", "items": _DESTINATION},
    },
}

OPENAPI_PATHS: dict = {
    "/api/messages/{id}/try": {
        "post": operation(
            "Run the message through its channel, or the one named, without storing or sending anything:"
            " accepted or why not, and per destination the fields it would change (audited: try)",
            OPERATOR,
            parameters=[ID, query("channel", "the channel to try (default: the message's own)")],
            ok=json_response("what the channel would make of the message", _TRIAL),
            responses={"404": {"description": "no such message"}, "410": {"description": "content pruned"}},
        )
    }
}


class TryApi(JsonResource):
    """``POST /api/messages/{id}/try``: built per request for one message resource of ``MessagesApi``."""

    isLeaf = True

    def __init__(self, message, trial: TrialRunner):
        """``message``: the message resource (its id, store and ``changed``, which audits the request)."""
        super().__init__()
        self._message = message
        self._trial = trial

    def render_POST(self, request) -> int:
        message = self._message

        @defer.inlineCallbacks
        def run(params: Mapping[str, str]):
            stored = yield message.store.get(message.message_id)
            if stored.pruned_at is not None:
                return error_reply(410, f"message {stored.id}: retention removed its content")
            channel = params.get("channel") or stored.summary.channel
            if not channel:
                return error_reply(400, f"message {stored.id} has no channel: name one with ?channel=")
            try:
                trial = self._trial(channel, stored.raw)
            except KeyError:
                return error_reply(400, f"no channel named {channel!r} in the running configuration")
            return json_reply(trial.as_dict())

        return message.changed(request, "try", ("channel",), run)
