"""Messages as the intake stores them (``NewMessage``), for the tests of every layer.

``new_message`` is the one way a test makes one: it reads the header columns from the bytes'
MSH as the intake does, so a test says only which bytes came, and when and how. ``lab_message``
and ``pms_message`` are the numbered samples of the store and the web tests.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from engine.channels.examine import header_columns
from engine.errors import HL7Error
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.model import AttemptResult, NewDelivery, NewMessage, Outcome, Status

#: When a message is received unless a test says otherwise.
RECEIVED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
#: When ``lab_message(0)`` is received; message ``n`` comes ``n`` minutes later.
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

_LAB = "MSH|^~\\&|LAB|NORTH|EHR|SOUTH|20240301120000||ADT^A01^ADT_A01|C{n}|P|2.5\rPID|1||{n}\r"
_LAB_ACK = "MSH|^~\\&|EHR|SOUTH|LAB|NORTH|20240301120001||ACK^A01|A{n}|P|2.5\rMSA|AA|C{n}\r"
_PMS = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|CTRL{n}|P|2.5.1\r"
    "PID|1||{n}^^^PMS^MR||DOE^JANE||19800101|F\r"
)
_PMS_ACK = "MSH|^~\\&|HUB|TEST|PMS|CLINIC|20260101120001||ACK^A04|A{n}|P|2.5.1\rMSA|AA|CTRL{n}\r"


def new_message(raw: bytes, **columns) -> NewMessage:
    """``raw`` as the intake stores it: its MSH read into the header columns (none without an MSH).

    Received at RECEIVED_AT by listener ``main`` for channel ``adt``, RECEIVED, answered AA;
    ``columns`` give any column another value.
    """
    try:
        header = header_columns(read_header(decode(raw).text))
    except HL7Error:
        header = {}
    values = dict(
        received_at=RECEIVED_AT,
        listener="main",
        peer="127.0.0.1",
        status=Status.RECEIVED,
        channel="adt",
        ack_code="AA",
        **header,
    )
    values.update(columns)
    return NewMessage(raw=raw, **values)


def lab_message(n: int = 0, **columns) -> NewMessage:
    """ADT^A01 number ``n`` from LAB/NORTH to EHR/SOUTH (v2.5): control id C<n>, received T0 + n minutes.

    ``columns`` replace any column, ``raw`` too (the header columns stay those of the sample).
    """
    sample = new_message(
        _LAB.format(n=n).encode(),
        received_at=T0 + timedelta(minutes=n),
        listener="mllp-in",
        peer=f"127.0.0.1:{40000 + n}",
        ack=_LAB_ACK.format(n=n).encode(),
    )
    return dataclasses.replace(sample, **columns)


def pms_message(n: int, **columns) -> NewMessage:
    """ADT^A04 number ``n`` from PMS/CLINIC to HUB/TEST (v2.5.1) of patient DOE^JANE: control id CTRL<n>.

    TRANSFORMED, received on 2026-01-01 at 12:<n>. ``columns`` replace any column, ``raw`` too
    (the header columns stay those of the sample).
    """
    sample = new_message(
        _PMS.format(n=n).encode(),
        received_at=datetime(2026, 1, 1, 12, n % 60, tzinfo=UTC),
        peer="127.0.0.1:40000",
        status=Status.TRANSFORMED,
        ack=_PMS_ACK.format(n=n).encode(),
    )
    return dataclasses.replace(sample, **columns)


#: The answer of destination ``emr`` in ``store_every_stage``: an AE.
EMR_ANSWER = b"MSH|^~\\&|EMR|WARD|HUB|TEST|20260101120500||ACK^A04|X1|P|2.3\rMSA|AE|OUT1|no bed\r"


def store_every_stage(store, message: NewMessage, emr_payload: bytes, lab_payload: bytes):
    """Store ``message`` QUEUED for ``emr`` and ``lab``, then emr SENT (answered EMR_ANSWER), lab ERROR.

    The message's transformed content is ``lab_payload``; a Deferred of its id.
    """
    deliveries = (
        NewDelivery("emr", Status.QUEUED, "OUT1", emr_payload),
        NewDelivery("lab", Status.QUEUED, "OUT1", lab_payload),
    )
    queued = dataclasses.replace(
        message, status=Status.QUEUED, transformed=lab_payload, deliveries=deliveries
    )
    at = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)

    def attempted(ids: list[int]):
        def recorded(stored):
            emr, lab = stored.deliveries
            results = [
                AttemptResult(emr.id, Outcome.SENT, at, response=EMR_ANSWER, response_code="AE"),
                AttemptResult(lab.id, Outcome.ERROR, at, reason="connection refused"),
            ]
            return store.record_attempts(results).addCallback(lambda _: ids[0])

        return store.get(ids[0]).addCallback(recorded)

    return store.add([queued]).addCallback(attempted)
