"""The shapes every pipeline stage has: filters, transforms and destinations.

A stage has a name and one method (Scrapy's pipeline is the model). Only the channel runner
turns what a stage returns into statuses, events and logs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from twisted.internet import defer

from engine.hl7.message import Message


class Filter(Protocol):
    """Decides whether a message goes on; ``name`` says which filter it is (its YAML path)."""

    name: str

    def check(self, message: Message) -> str | None:
        """None when the message passes; otherwise the reason it is filtered out.

        Raises TransformError when the filter cannot be evaluated (the message goes to ERROR).
        """


class Transform(Protocol):
    """Changes a message; ``name`` says which transform it is (its YAML path)."""

    name: str

    def apply(self, message: Message) -> Message:
        """The transformed message (may be the same object, changed). Raises TransformError."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to hand one message to one destination."""

    delivery_id: int
    message_id: int
    channel: str
    destination: str
    control_id: str  # MSH-10 of the payload, for matching the downstream ACK's MSA-2
    payload: bytes  # the encoded message, exactly the bytes to send
    attempt: int  # 1 for the first attempt
    queued_at: datetime | None = None  # when the delivery was queued (for giving up by age)


class Outcome(enum.StrEnum):
    """What became of a delivery attempt."""

    SENT = "SENT"  # the destination took responsibility (AA/CA, file written, HTTP 2xx with AA)
    RETRY = "RETRY"  # try again later (timeout, connection refused, CE, AR 206/207 or without ERR)
    ERROR = "ERROR"  # resending unchanged would fail again (AE, CR, AR 200-203, HTTP 4xx)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The result of one attempt: the outcome, what the destination answered, and why."""

    outcome: Outcome
    response: bytes | None = None  # e.g. the downstream ACK
    response_code: str = ""  # e.g. MSA-1 (AA/AE/AR/CA/CE/CR) or the HTTP status
    reason: str = ""  # readable, for the operator; never message content


class Destination(Protocol):
    """Where a channel sends messages: MLLP, file, HTTP, another channel."""

    name: str

    def start(self) -> None:
        """Open what needs opening (connections are opened lazily, on first send)."""

    def stop(self) -> defer.Deferred:
        """Close connections; fires when closed."""

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Fires with a DeliveryResult; never errbacks (a failure is a RETRY or ERROR result)."""
