"""The shapes every pipeline stage has: filters, transforms and destinations.

A stage has a name and one method (Scrapy's pipeline is the model). Only the channel runner
turns what a stage returns into statuses, events and logs.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet import defer

from engine.hl7.message import Message
from engine.model import Delivery


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


class Destination(Protocol):
    """Where a channel sends messages: MLLP, file, HTTP, another channel."""

    name: str

    def start(self) -> None:
        """Open what needs opening (connections are opened lazily, on first send)."""

    def stop(self) -> defer.Deferred:
        """Close connections; fires when closed."""

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Fires with a DeliveryResult; never errbacks (a failure is a RETRY or ERROR result)."""
