"""The `channel` destination: hand a message to another channel, durably.

The message is stored again as RECEIVED by the target channel (listener ``channel:<source>``),
so the target processes it like any other message, with its own filters, transforms,
destinations and queues, in its order of receipt; the delivery counts as SENT once that row is
committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from twisted.internet import defer

from engine.channels.destinations.base import Destination
from engine.channels.examine import header_columns
from engine.errors import HL7Error, StoreError
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.model import Delivery, DeliveryResult, NewMessage, Outcome, Status, utc_now

if TYPE_CHECKING:
    from engine.channels.channel import Channel

__all__ = ["ChannelHandoff"]


class ChannelHandoff(Destination):
    """Stores the message for another channel, which then takes it in turn like one from its listener."""

    def __init__(
        self,
        name: str,
        target: str,
        *,
        source_channel: str,
        store,
        channels: Mapping[str, Channel],
        default_charset: str = "utf-8",
        clock: Callable[[], datetime] = utc_now,
    ):
        """``channels``: the running channels by name, looked up at each send (a reload replaces them)."""
        super().__init__(name)
        self.target = target
        self.source_channel = source_channel
        self.store = store
        self.channels = channels
        self.default_charset = default_charset
        self.clock = clock

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Store the payload as received by the target channel.

        SENT once committed, RETRY when the store fails.
        """
        decoded = decode(delivery.payload, self.default_charset)
        try:
            header = read_header(decoded.text)
        except HL7Error as error:
            return defer.succeed(
                DeliveryResult(Outcome.ERROR, reason=f"cannot hand over to channel {self.target}: {error}")
            )
        row = NewMessage(
            raw=delivery.payload,
            received_at=self.clock(),
            listener=f"channel:{self.source_channel}",
            peer=f"channel:{self.source_channel}/{self.name}",
            channel=self.target,
            status=Status.RECEIVED,
            charset=decoded.charset,
            **header_columns(header),
        )
        target = self.channels.get(self.target)
        receipt = target.hold() if target is not None else None
        d = self.store.add([row])

        def stored(ids):
            if receipt is not None:
                target.stored([(receipt, ids[0])])
            return DeliveryResult(Outcome.SENT, reason=f"stored as message {ids[0]} of channel {self.target}")

        def failed(failure):
            if receipt is not None:
                target.dropped(receipt)
            failure.trap(StoreError)
            return DeliveryResult(Outcome.RETRY, reason=f"store unavailable: {failure.getErrorMessage()}")

        d.addCallbacks(stored, failed)
        return d
