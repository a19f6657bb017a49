"""Trying a channel on a message without storing or delivering it: what it would accept, filter, change.

``try_message`` runs the channel's own code on a message and keeps what came out instead of acting
on it: the listener's routing and header checks (``Examiner``: would the channel take it?), then
the channel's pipeline (``build_pipeline``: its filters and transforms, then each destination's on
its own copy). Each destination's output is compared field by field with the input
(``engine.hl7.diff``). Nothing touches a store, a queue, a socket or a destination's folder, so
it is safe on a live configuration and answers the same every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.channels.build import build_pipeline
from engine.channels.examine import Examiner
from engine.errors import HL7Error
from engine.hl7.ack import Sender
from engine.hl7.charset import decode
from engine.hl7.diff import Change, diff_messages
from engine.hl7.header import read_header
from engine.hl7.message import Message
from engine.model import Status

if TYPE_CHECKING:
    from engine.config import Config

__all__ = ["DestinationTrial", "Trial", "try_message"]

#: What a tried message came to: taken by the channel (then each destination says more), or not.
ACCEPTED, NOT_ACCEPTED, FILTERED, FAILED = "accepted", "not accepted", "filtered", "failed"


@dataclass(frozen=True)
class DestinationTrial:
    """One destination's outcome: queued (what it would send, and how it differs), filtered or failed."""

    destination: str
    outcome: str  # "queued", "filtered", "failed"
    reason: str = ""
    changes: tuple[Change, ...] = ()
    output: str | None = None  # the message the destination would send, segments separated by CR

    def as_dict(self) -> dict:
        """Plain data (JSON)."""
        return {
            "destination": self.destination,
            "outcome": self.outcome,
            "reason": self.reason,
            "changes": [change.as_dict() for change in self.changes],
            "output": self.output,
        }


@dataclass(frozen=True)
class Trial:
    """What a channel would make of one message."""

    channel: str
    outcome: str  # ACCEPTED, NOT_ACCEPTED, FILTERED, FAILED
    reason: str = ""
    control_id: str = ""
    message_type: str = ""
    version: str = ""
    destinations: tuple[DestinationTrial, ...] = ()

    def as_dict(self) -> dict:
        """Plain data (JSON)."""
        return {
            "channel": self.channel,
            "outcome": self.outcome,
            "reason": self.reason,
            "control_id": self.control_id,
            "message_type": self.message_type,
            "version": self.version,
            "destinations": [destination.as_dict() for destination in self.destinations],
        }


_DELIVERY_OUTCOMES = {Status.QUEUED: "queued", Status.FILTERED: "filtered", Status.ERROR: "failed"}


def try_message(config: Config, channel_name: str, raw: bytes) -> Trial:
    """What channel ``channel_name`` of ``config`` would make of message ``raw``; KeyError: no such channel.

    Not accepted: the listener refuses the message (its header) or routes it to another channel.
    """
    index = next((i for i, channel in enumerate(config.channels) if channel.name == channel_name), None)
    if index is None:
        raise KeyError(f"no channel named {channel_name!r}")
    channel = config.channels[index]
    settings = config.engine
    decoded = decode(raw, settings.default_charset)
    try:
        header = read_header(decoded.text)
    except HL7Error as error:
        return Trial(channel_name, NOT_ACCEPTED, reason=str(error))
    version = header.version or settings.default_version
    about = dict(control_id=header.control_id, message_type=header.message_type, version=version)
    refusal = _refusal(config, channel_name, channel.source, raw, decoded)
    if refusal:
        return Trial(channel_name, NOT_ACCEPTED, reason=refusal, **about)
    pipeline = build_pipeline(config, index, tables=config.lookup_tables)
    result = pipeline.process_text(0, decoded.text, decoded.codec, header.control_id)
    if result.status == Status.FILTERED and not result.deliveries:
        return Trial(channel_name, FILTERED, reason=result.reason, **about)
    if result.status == Status.ERROR and not result.deliveries:
        return Trial(channel_name, FAILED, reason=result.reason, **about)
    before = Message.parse(decoded.text)
    destinations = []
    for delivery in result.deliveries:
        if delivery.payload is None:
            destinations.append(
                DestinationTrial(delivery.destination, _DELIVERY_OUTCOMES[delivery.status], delivery.reason)
            )
            continue
        output = delivery.payload.decode(decoded.codec).rstrip("\r")
        changes = tuple(diff_messages(before, Message.parse(output), version))
        destinations.append(DestinationTrial(delivery.destination, "queued", changes=changes, output=output))
    return Trial(channel_name, ACCEPTED, destinations=tuple(destinations), **about)


def _refusal(config: Config, channel_name: str, source: str, raw: bytes, decoded) -> str:
    """Why the channel's listener would not give it this message ('' when it would)."""
    if not next(c for c in config.channels if c.name == channel_name).enabled:
        return "the channel is disabled (enabled: false)"
    listener = config.listener(source)  # the config's cross-checks name only existing listeners
    settings = config.engine
    examiner = Examiner(
        listener,
        config.channels_for(source),
        sender=Sender(settings.application, settings.facility, settings.default_version),
        default_charset=settings.default_charset,
        clock=lambda: datetime.now(UTC),
        control_ids=lambda: "TRY",
    )
    verdict = examiner.message(decoded.text, raw, decoded, "try", datetime.now(UTC))
    if verdict.errors:
        return "; ".join(f"{error.code} {error.text}" for error in verdict.errors)
    if verdict.rows[0].status == Status.REJECTED:  # an acknowledgement with a faulty header
        return verdict.rows[0].error
    if verdict.channel is None or verdict.channel.name != channel_name:
        taker = verdict.channel.name if verdict.channel is not None else "none"
        return f"listener {source!r} gives this message to channel {taker!r}, its first that accepts it"
    return ""
