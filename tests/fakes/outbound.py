"""What destinations send downstream in the tests (messages, the deliveries carrying them) and the ACKs back.

The ACKs are built with the engine's own ACK builder.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.hl7.ack import AckError, Recipient, Sender, build_ack
from engine.model import Delivery

MESSAGE = (
    "MSH|^~\\&|HUB|TEST|LAB|CLINIC|20260101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r"
    "EVN|A01|20260101120000\rPID|1||{n}^^^PMS^MR||DOE^JOHN\r"
)

_SENDER = Sender(application="LAB", facility="CLINIC")
_WHEN = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)


def message(n: int) -> bytes:
    """Test message number n; its control id is MSG-n."""
    return MESSAGE.format(control_id=f"MSG-{n}", n=n).encode("ascii")


def delivery(n: int, **fields) -> Delivery:
    """The first delivery of test message n to lab, of channel adt; ``fields`` replace any field."""
    values = dict(
        delivery_id=n,
        message_id=n,
        channel="adt",
        destination="lab",
        control_id=f"MSG-{n}",
        payload=message(n),
        attempt=1,
    )
    values.update(fields)
    return Delivery(**values)


def ack(code: str, control_id: str, *errors: int, version: str = "2.5.1", text: str = "") -> bytes:
    """An ACK with MSA-1 ``code`` answering ``control_id``, one ERR entry per code (layout by version)."""
    recipient = Recipient(
        sending_application="HUB",
        sending_facility="TEST",
        control_id=control_id,
        trigger_event="A01",
        processing_id="P",
        version=version,
    )
    ack_errors = [AckError(code=e, text=text or f"error {e}", location=("MSH", 1, 12)) for e in errors]
    return (
        build_ack(
            recipient, code, sender=_SENDER, control_id="ACK1", timestamp=_WHEN, errors=ack_errors
        ).encode("utf-8")
        + b"\r"
    )
