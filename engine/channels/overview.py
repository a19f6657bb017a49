"""What the dashboard and ``hl7engine channel list`` show of the channels: counts, queues and pauses as JSON.

The channels are taken as configured, either the full configuration's (``engine.channels.spec``) or
the light view of ``engine.configstore`` (what ``channel list`` reads without building a channel):
only their names, ``enabled``, ``source``, and each destination's name, ``type`` and ``queue.on_error``
are read. No Twisted here, so a command can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.model import Status
from engine.store.reads import DashboardCounts, QueueState, is_paused

__all__ = [
    "DEFAULT_WINDOW",
    "WINDOWS",
    "ListenerState",
    "Overview",
    "channels_json",
    "listeners_json",
]

#: The windows the counts are taken over, by the name the API takes.
WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True, slots=True)
class ListenerState:
    """A listener of this process as it is now."""

    name: str
    type: str  # mllp or file
    endpoint: str  # the endpoint string, or the directory polled
    bound: bool
    port: int | None
    connections: int


@dataclass(frozen=True, slots=True)
class Overview:
    """What the engine runs now: its channels as configured and its listeners' state."""

    channels: Sequence  # engine.channels.spec.ChannelConfig or engine.configstore.ChannelView
    listeners: Sequence[ListenerState]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _per_minute(count: int, window: timedelta) -> float:
    return round(count / (window.total_seconds() / 60.0), 3)


def _destination_json(channel: str, destination, state: QueueState, pauses, counts: DashboardCounts, window):
    own = pauses.get((channel, destination.name))
    sent = state.settled.get(Status.SENT, 0)
    return {
        "name": destination.name,
        "type": destination.type,
        "on_error": destination.queue.on_error,
        "paused": own.to_json_dict() if own is not None else None,
        "held": is_paused(pauses, channel, destination.name) is not None,
        "halted": own is not None and own.halted_delivery is not None,
        "counts": {
            "sent": sent,
            "errored": state.settled.get(Status.ERROR, 0),
            "filtered": state.settled.get(Status.FILTERED, 0),
        },
        "sent_per_minute": _per_minute(sent, window),
        "queue_depth": state.depth,
        "oldest_queued_at": _time(state.oldest_queued_at),
        "oldest_queued_age_seconds": (
            round((counts.at - state.oldest_queued_at).total_seconds(), 3) if state.oldest_queued_at else None
        ),
        "consecutive_failures": state.head_attempts,
        "failing_reason": state.head_reason if state.head_attempts else "",
        "last_error": state.last_error,
        "last_error_at": _time(state.last_error_at),
    }


def channels_json(overview: Overview, counts: DashboardCounts, pauses, window_name: str) -> dict:
    """The body of ``GET /api/channels``: each channel with its counts, queues and pauses."""
    window = WINDOWS[window_name]
    channels = []
    for channel in overview.channels:
        by_status = counts.channels.get(channel.name, {})
        received = sum(by_status.values())
        pause = pauses.get((channel.name, ""))
        channels.append(
            {
                "name": channel.name,
                "enabled": channel.enabled,
                "source": channel.source,
                "paused": pause.to_json_dict() if pause is not None else None,
                "counts": {
                    "received": received,
                    "filtered": by_status.get(Status.FILTERED, 0),
                    "queued": by_status.get(Status.QUEUED, 0),
                    "sent": by_status.get(Status.SENT, 0),
                    "errored": by_status.get(Status.ERROR, 0),
                    "rejected": by_status.get(Status.REJECTED, 0),
                },
                "queued_now": counts.channels_queued.get(channel.name, 0),
                "received_per_minute": _per_minute(received, window),
                "destinations": [
                    _destination_json(
                        channel.name,
                        destination,
                        counts.queues.get((channel.name, destination.name), QueueState()),
                        pauses,
                        counts,
                        window,
                    )
                    for destination in channel.destinations
                ],
            }
        )
    return {
        "at": counts.at.isoformat(),
        "window": window_name,
        "since": counts.since.isoformat(),
        "channels": channels,
    }


def listeners_json(overview: Overview, counts: DashboardCounts, window_name: str) -> dict:
    """The body of ``GET /api/listeners``."""
    window = WINDOWS[window_name]
    return {
        "at": counts.at.isoformat(),
        "window": window_name,
        "listeners": [
            {
                "name": listener.name,
                "type": listener.type,
                "endpoint": listener.endpoint,
                "bound": listener.bound,
                "port": listener.port,
                "connections": listener.connections,
                "received": counts.listeners.get(listener.name, 0),
                "received_per_minute": _per_minute(counts.listeners.get(listener.name, 0), window),
                "last_received_at": _time(counts.last_received.get(listener.name)),
            }
            for listener in overview.listeners
        ],
    }
