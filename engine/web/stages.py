"""Every stage of a stored message, as the console shows it: text, and a table of named segments and fields.

The stages, in the order a message goes through them: ``received`` (the bytes as they came),
``transformed`` (after the channel's transforms), ``ack`` (our answer to the sender), then per
delivery ``sent`` (what the destination was sent) and ``response`` (the partner's answer), and
``error`` (the message's own, or a delivery's). Content is decoded with the charset its MSH-18
names; its table names fields and components for the version its MSH-12 gives (else the
message's). A stage without content (none yet, or pruned by retention) is left out.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.hl7.table import message_table
from engine.model import Status
from engine.store.reads import StoredMessage

__all__ = ["STAGES", "message_stages"]

STAGES = ("received", "transformed", "ack", "sent", "response", "error")


def _stage(stage: str, text: str, version: str, *, destination=None, delivery_id=None, hl7=True) -> dict:
    return {
        "stage": stage,
        "destination": destination,
        "delivery_id": delivery_id,
        "text": text,
        "segments": message_table(text, version) if hl7 else [],
    }


def message_stages(stored: StoredMessage, text: Callable[[bytes | None], str | None]) -> list[dict]:
    """The stages of ``stored`` with content, in order; ``text`` decodes stored bytes (per MSH-18)."""
    version = stored.version
    stages = []
    for stage, content in (
        ("received", stored.raw),
        ("transformed", stored.transformed),
        ("ack", stored.ack),
    ):
        decoded = text(content)
        if decoded:
            stages.append(_stage(stage, decoded, version))
    if stored.error:
        stages.append(_stage("error", stored.error, version, hl7=False))
    for delivery in stored.deliveries:
        where = {"destination": delivery.destination, "delivery_id": delivery.id}
        for stage, content in (("sent", delivery.payload), ("response", delivery.response)):
            decoded = text(content)
            if decoded:
                stages.append(_stage(stage, decoded, version, **where))
        if delivery.reason and delivery.status in (Status.ERROR, Status.QUEUED):  # failed, or failing
            stages.append(_stage("error", delivery.reason, version, hl7=False, **where))
    return stages
