"""The ``alerts:`` list of channels.yaml: rules on the engine's counts and state, and where each tells.

Each rule has a ``kind`` (what it watches), what it looks at (a channel, a destination, a
listener, or everything), a ``threshold`` and a window where the kind needs them, and the
``notify`` targets it fires and clears to (a webhook, email, the log).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from engine.configtypes import Frozen, Name, Seconds

__all__ = ["KINDS", "AlertRule", "AnyNotify", "EmailNotify", "LogNotify", "WebhookNotify"]

#: What a rule can watch, and what its threshold counts.
KINDS = {
    "errors": "errors in the window (destination: deliveries in ERROR; else messages in ERROR)",
    "queue_depth": "deliveries waiting in a queue",
    "queue_age": "seconds the oldest queued delivery has waited",
    "no_traffic": "no message received in the window (a listener or a channel)",
    "listener_down": "a listener that does not listen",
    "destination_failing": "failed attempts in a row at the head of a queue (or the queue halted)",
}
#: The threshold a kind takes when the rule gives none; None: the rule must give one.
DEFAULT_THRESHOLDS = {"errors": 1.0, "destination_failing": 3.0, "queue_depth": None, "queue_age": None}


class WebhookNotify(Frozen):
    """A JSON POST to ``url`` for each firing and clearing."""

    type: Literal["webhook"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    timeout_seconds: Seconds = 10.0


class EmailNotify(Frozen):
    """A mail through an SMTP server for each firing and clearing."""

    type: Literal["email"]
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    sender: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    to: Annotated[tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")], ...], Field(min_length=1)]
    username: str | None = None
    password: str | None = None  # use ${ENV_VAR} substitution rather than a password in the file
    starttls: bool = False  # require STARTTLS before sending


class LogNotify(Frozen):
    """A warning in the engine's log when the rule fires, a line when it clears."""

    type: Literal["log"]


AnyNotify = Annotated[WebhookNotify | EmailNotify | LogNotify, Field(discriminator="type")]


class AlertRule(Frozen):
    """One alert rule: fires once when its condition holds, clears once when it no longer does."""

    name: Name
    kind: Literal["errors", "queue_depth", "queue_age", "no_traffic", "listener_down", "destination_failing"]
    channel: Name | None = None  # None: every channel
    destination: Name | None = None  # with channel: that destination's queue only
    listener: Name | None = None  # no_traffic, listener_down
    threshold: Annotated[float, Field(gt=0)] | None = None
    window_minutes: Annotated[float, Field(gt=0, le=1440)] = 5.0  # errors, no_traffic
    notify: tuple[AnyNotify, ...] = (LogNotify(type="log"),)

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        if self.destination is not None and self.channel is None:
            raise ValueError("a destination is named with its channel: give channel too")
        if self.kind in ("listener_down", "no_traffic"):
            if self.destination is not None:
                raise ValueError(f"{self.kind} watches a listener or a channel, not a destination")
        elif self.listener is not None:
            raise ValueError(f"{self.kind} does not watch a listener (it watches channels and destinations)")
        if self.kind == "no_traffic" and (self.listener is None) == (self.channel is None):
            raise ValueError("no_traffic watches one listener or one channel: give listener or channel")
        if self.kind == "listener_down" and self.channel is not None:
            raise ValueError("listener_down watches listeners: give listener (or nothing, for every one)")
        if self.kind in DEFAULT_THRESHOLDS and self.limit is None:
            raise ValueError(f"{self.kind} needs a threshold ({KINDS[self.kind]})")
        return self

    @property
    def limit(self) -> float | None:
        """The threshold, or the kind's default."""
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS.get(self.kind)

    @property
    def window_seconds(self) -> float:
        """The window the counts of ``errors`` and ``no_traffic`` are taken over, in seconds."""
        return self.window_minutes * 60.0
