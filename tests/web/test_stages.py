"""engine/web/stages.py through GET /api/messages/{id}: every stage of a message, as text and as a table."""

from __future__ import annotations

import pytest_twisted

from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message, store_every_stage
from tests.fakes.web import audit_rows, basic, fetch

_SENT = (
    "MSH|^~\\&|HUB|TEST|EMR|WARD|20260101120000||ADT^A04^ADT_A01|OUT1|P|2.3\rPID|1||1^^^PMS^MR||DOE^JANE\r"
)
_LATIN1_SENT = _SENT.replace("DOE", "MÜLLER").replace("|2.3\r", "|2.3||||||8859/1\r")


@pytest_twisted.inlineCallbacks
def test_a_message_shows_received_transformed_ack_sent_response_and_error(start_web, store):
    """Each stage comes as decoded text and named segments; a failed delivery's reason is an error stage."""
    message = pms_message(1)
    message_id = yield store_every_stage(store, message, _LATIN1_SENT.encode("latin-1"), _SENT.encode())
    emr, _lab = (yield store.get(message_id)).deliveries
    web = start_web()
    view = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    stages = view.json()["stages"]
    assert [(s["stage"], s["destination"]) for s in stages] == [
        ("received", None),
        ("transformed", None),
        ("ack", None),
        ("error", None),  # the message's own: its deliveries' reasons rolled up
        ("sent", "emr"),
        ("response", "emr"),
        ("sent", "lab"),
        ("error", "lab"),
    ]
    received, transformed, _ack, _error, sent, response, _lab, error = stages
    assert received["text"] == message.raw.decode()
    pid = received["segments"][1]
    assert pid["segment"] == "PID"
    assert [(f["position"], f["name"]) for f in pid["fields"][:2]] == [
        (1, "Set Id Pid"),
        (3, "Patient Identifier List"),
    ]
    assert "MÜLLER^JANE" in sent["text"]  # decoded as its MSH-18 says (ISO 8859-1)
    names = {f["position"]: f["name"] for f in sent["segments"][1]["fields"]}
    assert names[5] == "Patient Name"  # named for its own version, 2.3
    assert response["segments"][1]["fields"][0] == {
        "position": 1,
        "name": "Acknowledgment Code",
        "value": "AE",
        "repetitions": [],
    }
    assert transformed["delivery_id"] is None and sent["delivery_id"] == emr.id
    assert (error["text"], error["segments"]) == ("connection refused", [])
    assert [row[1] for row in audit_rows(store)] == ["view"]
