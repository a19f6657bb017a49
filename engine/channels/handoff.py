"""The `channel` destination: hand a message to another channel, durably.

The message is stored again as RECEIVED by the target channel (listener ``channel:<source>``),
so the target processes it like any other message, with its own filters, transforms,
destinations and queues; the delivery counts as SENT once that row is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from twisted.internet import defer

from engine.channels.intake import header_columns
from engine.errors import HL7Error, StoreError
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.model import Delivery, DeliveryResult, NewMessage, Outcome, Status


class ChannelHandoff:
    """Destination that stores the message for another channel and wakes that channel's runner."""

    def __init__(
        self,
        name: str,
        target: str,
        *,
        source_channel: str,
        store,
        runners: Mapping[str, object],
        default_charset: str = "utf-8",
        clock: Callable[[], datetime] | None = None,
    ):
        self.name = name
        self.target = target
        self.source_channel = source_channel
        self.store = store
        self.runners = runners
        self.default_charset = default_charset
        self.clock = clock or (lambda: datetime.now(UTC))

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> defer.Deferred:
        """Nothing to close."""
        return defer.succeed(None)

    def send(self, delivery: Delivery) -> defer.Deferred:
        """Store the payload as received by the target channel; SENT once committed, RETRY when the store fails."""
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
        d = self.store.add([row])

        def stored(ids):
            runner = self.runners.get(self.target)
            if runner is not None:
                runner.notify()
            return DeliveryResult(Outcome.SENT, reason=f"stored as message {ids[0]} of channel {self.target}")

        def failed(failure):
            failure.trap(StoreError)
            return DeliveryResult(Outcome.RETRY, reason=f"store unavailable: {failure.getErrorMessage()}")

        d.addCallbacks(stored, failed)
        return d
