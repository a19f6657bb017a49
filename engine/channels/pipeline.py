"""A channel's stages as one pure function: a message in, a ``ProcessingResult`` out.

The channel's filters and transforms run first, then each destination's own on its own copy of
the message; what they make of it is the message's status (FILTERED, ERROR, QUEUED, TRANSFORMED)
and one delivery per destination. No I/O, no reactor, no store: the same message gives the same
result, whether the channel processes it at intake or in a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import HL7Error, TransformError
from engine.hl7.charset import decode, encode
from engine.hl7.message import Message, parsed_text
from engine.model import NewDelivery, ProcessingResult, ReceivedMessage, Status, roll_up
from engine.transforms.stages import Filter, Transform

__all__ = ["DestinationStages", "Pipeline"]


@dataclass(frozen=True)
class DestinationStages:
    """One destination's own filters and transforms, applied after the channel's."""

    name: str
    filters: Sequence[Filter] = ()
    transforms: Sequence[Transform] = ()


class Pipeline:
    """The filters and transforms of a channel and of each of its destinations."""

    def __init__(
        self,
        filters: Sequence[Filter] = (),
        transforms: Sequence[Transform] = (),
        destinations: Sequence[DestinationStages] = (),
        *,
        default_charset: str = "utf-8",
    ):
        self.filters = tuple(filters)
        self.transforms = tuple(transforms)
        self.destinations = tuple(destinations)
        self.default_charset = default_charset
        self._unchanged = any(not (d.filters or d.transforms) for d in self.destinations)

    def process(self, row: ReceivedMessage) -> ProcessingResult:
        """The result for a stored RECEIVED message (its bytes decoded by their MSH-18)."""
        decoded = decode(row.raw, self.default_charset)
        return self.process_text(row.id, decoded.text, decoded.codec, row.control_id)

    def process_text(self, message_id: int, text: str, codec: str, control_id: str) -> ProcessingResult:
        """The result for a decoded message; deliveries are encoded back with ``codec``."""
        try:
            if self.filters or self.transforms:
                message = Message.parse(text)
                for stage in self.filters:
                    reason = stage.check(message)
                    if reason is not None:
                        return ProcessingResult(message_id, Status.FILTERED, reason=reason)
                for stage in self.transforms:
                    message = stage.apply(message)
                text = message.to_text()
            else:  # nothing reads or changes it here: no need to build the message
                text = parsed_text(text)
        except (TransformError, HL7Error) as error:
            return ProcessingResult(message_id, Status.ERROR, reason=str(error))
        transformed = encode(text, codec) if self.transforms else None
        # What every destination without stages of its own sends: encoded once for them all.
        unchanged = encode(text + "\r", codec) if self._unchanged else None
        deliveries = tuple(
            self._delivery(d, text, codec, control_id)
            if d.filters or d.transforms
            else NewDelivery(d.name, Status.QUEUED, control_id, unchanged)
            for d in self.destinations
        )
        status = roll_up(d.status for d in deliveries)
        # Queued, the message has no reason to give yet (the common case: nothing to join).
        reason = (
            ""
            if status == Status.QUEUED
            else "; ".join(f"{d.destination}: {d.reason}" for d in deliveries if d.reason)
        )
        return ProcessingResult(
            message_id, status, reason=reason, transformed=transformed, deliveries=deliveries
        )

    def _delivery(self, stages: DestinationStages, text: str, codec: str, control_id: str) -> NewDelivery:
        # Each destination transforms its own copy: what one changes, the next does not see.
        message = Message.parse(text)
        try:
            for stage in stages.filters:
                reason = stage.check(message)
                if reason is not None:
                    return NewDelivery(stages.name, Status.FILTERED, control_id, None, reason)
            for stage in stages.transforms:
                message = stage.apply(message)
        except (TransformError, HL7Error) as error:
            return NewDelivery(stages.name, Status.ERROR, control_id, None, str(error))
        return NewDelivery(
            stages.name, Status.QUEUED, message.get("MSH-10"), encode(message.to_text() + "\r", codec)
        )
