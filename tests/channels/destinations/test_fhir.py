"""The fhir destination against the test FHIR server on loopback, alone and in a real engine (MLLP in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from engine.channels.destinations.fhir import FHIRDestination, outcome_text
from engine.channels.destinations.spec import FhirDestinationSettings
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.model import Outcome, Status
from tests.fakes.fhirserver import operation_outcome
from tests.fakes.harness import in_thread, make_config, port_of, start_engine, statuses, wait_until
from tests.fakes.outbound import delivery

SENT, RETRY, ERROR = Outcome.SENT, Outcome.RETRY, Outcome.ERROR


@pytest.fixture
def destinations(started):
    """Builds started fhir destinations, stopped after the test."""

    def build(url: str, **settings) -> FHIRDestination:
        settings.setdefault("time_zone", "UTC")
        return started(FHIRDestination("fhir", FhirDestinationSettings(url=url, **settings), reactor=reactor))

    return build


@pytest_twisted.inlineCallbacks
def test_a_message_is_posted_as_a_transaction_bundle_and_stored(fhir_server, destinations):
    """The POST is a transaction Bundle as application/fhir+json; a 200 transaction-response is SENT."""
    destination = destinations(fhir_server.url, headers={"X-Tenant": "north"})
    result = yield destination.send(delivery(1))
    assert (result.outcome, result.response_code) == (SENT, "200")
    assert json.loads(result.response)["type"] == "transaction-response"
    headers = fhir_server.headers[0]
    assert headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert headers["x-tenant"] == "north"
    [patient] = fhir_server.resources["Patient"].values()
    assert patient["name"] == [{"family": "DOE", "given": ["JOHN"]}]
    assert {"system": "urn:hl7engine:authority:PMS", "value": "1"}.items() <= patient["identifier"][0].items()


@pytest_twisted.inlineCallbacks
def test_the_same_message_sent_twice_creates_nothing_twice(fhir_server, destinations):
    """Conditional update and create: a resend finds the resources the first send made."""
    destination = destinations(fhir_server.url)
    first = yield destination.send(delivery(1))
    again = yield destination.send(delivery(1, delivery_id=2, attempt=2))
    assert (first.outcome, again.outcome) == (SENT, SENT)
    assert len(fhir_server.received) == 2
    assert len(fhir_server.resources["Patient"]) == 1
    statuses = [entry["response"]["status"] for entry in json.loads(again.response)["entry"]]
    assert statuses == ["200 OK"]


@pytest.mark.parametrize("status", [500, 503, 429, 408])
@pytest_twisted.inlineCallbacks
def test_server_errors_and_throttling_are_retried(fhir_server, destinations, status):
    """5xx, 429 and 408 say "not now": RETRY, with the status as the response code."""
    fhir_server.fail_next(status, operation_outcome("transient", "busy"))
    result = yield destinations(fhir_server.url).send(delivery(1))
    assert (result.outcome, result.response_code) == (RETRY, str(status))
    assert fhir_server.resources == {}


@pytest_twisted.inlineCallbacks
def test_a_refused_bundle_is_an_error_with_the_operation_outcome_kept(fhir_server, destinations):
    """400 with an OperationOutcome is ERROR; the outcome is the response, its issues name the reason."""
    outcome = operation_outcome("invalid", "Patient.gender: unknown code", "Bundle.entry[0].resource.gender")
    fhir_server.fail_next(400, outcome)
    result = yield destinations(fhir_server.url).send(delivery(1))
    assert (result.outcome, result.response_code) == (ERROR, "400")
    assert json.loads(result.response) == outcome
    assert result.reason == "HTTP 400 Bad Request: error invalid at Bundle.entry[0].resource.gender"


@pytest_twisted.inlineCallbacks
def test_a_2xx_whose_entries_failed_is_an_error(fhir_server, destinations):
    """A transaction-response with an entry that is not 2xx is ERROR, naming the entry."""
    failed = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "422 Unprocessable Entity", "outcome": operation_outcome("invalid", "x")}}
        ],
    }
    fhir_server.fail_next(200, failed)
    result = yield destinations(fhir_server.url).send(delivery(1))
    assert result.outcome == ERROR
    assert result.reason == "entry 1: 422 Unprocessable Entity (error invalid)"


@pytest_twisted.inlineCallbacks
def test_no_connection_and_no_answer_in_time_are_retried(fhir_server, destinations, closed_port):
    """Connection refused and a reply slower than timeout_seconds are RETRY."""
    refused = yield destinations(f"http://127.0.0.1:{closed_port}/fhir").send(delivery(1))
    assert refused.outcome == RETRY
    assert "failed" in refused.reason
    fhir_server.fail_next(200, {"resourceType": "Bundle", "type": "transaction-response"}, delay=5)
    late = yield destinations(fhir_server.url, timeout_seconds=0.3).send(delivery(1))
    assert (late.outcome, late.reason) == (RETRY, "no response within 0.3s")


@pytest_twisted.inlineCallbacks
def test_a_payload_that_is_no_message_is_an_error_without_a_request(fhir_server, destinations):
    """What cannot be converted is ERROR at once; nothing is posted."""
    result = yield destinations(fhir_server.url).send(delivery(1, payload=b"PID|1||X"))
    assert result.outcome == ERROR
    assert result.reason.startswith("cannot convert to FHIR: ")
    assert fhir_server.headers == []


def test_outcome_text_reads_only_operation_outcomes():
    """Other JSON, or no JSON, gives no text; each issue gives severity, code and location."""
    assert outcome_text(b"<html/>") == ""
    assert outcome_text(b'{"resourceType": "Patient"}') == ""
    two = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "required", "location": ["Patient.name"]},
            {"severity": "warning"},
        ],
    }
    assert outcome_text(json.dumps(two).encode()) == "error required at Patient.name; warning unknown"


ENGINE_CONFIG = """
engine:
  application: HUB
  facility: TEST
  data_dir: {data_dir}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: clinical
    source: main
    accept:
      types: [ADT, ORU, SIU, DFT]
    destinations:
      - name: fhir
        type: fhir
        url: %s
        time_zone: UTC
        timeout_seconds: 5
        queue:
          on_error: skip
          retry_initial_seconds: 0.1
          retry_max_seconds: 0.2
          retry_jitter: 0
"""


def samples() -> list[bytes]:
    """The hand-written ADT, ORU, SIU and DFT samples, as sent over MLLP."""
    folder = Path(__file__).parents[2] / "samples" / "fhir"
    return [
        (folder / name).read_bytes() for name in ("adt_a01.hl7", "oru_r01.hl7", "siu_s12.hl7", "dft_p03.hl7")
    ]


def send_all(port: int, payloads: list[bytes]) -> list[str]:
    """The ACK code of each payload, sent over one MLLP connection."""
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        return [parse_reply(client.request(payload)).code for payload in payloads]


@pytest_twisted.inlineCallbacks
def test_messages_in_over_mllp_reach_the_fhir_server_and_are_sent(tmp_path, fhir_server):
    """A real engine: MLLP in, fhir out; one Bundle per message, the patient stored once, all SENT."""
    engine = start_engine(make_config(tmp_path, text=ENGINE_CONFIG % fhir_server.url))
    try:
        assert (yield in_thread(send_all, port_of(engine), samples())) == ["AA"] * 4
        yield wait_until(lambda: len(fhir_server.received) == 4)
        done = yield wait_until(lambda: _all(engine, Status.SENT, 4))
        assert set(done.values()) == {Status.SENT}
    finally:
        yield engine.stopService()
    assert len(fhir_server.resources["Patient"]) == 1  # the same PID-3 in all four: one conditional update
    [report] = fhir_server.resources["DiagnosticReport"].values()
    patient_id = next(iter(fhir_server.resources["Patient"]))
    assert report["subject"] == {"reference": f"Patient/{patient_id}"}
    assert len(report["result"]) == 5
    assert {kind for kind in fhir_server.resources} >= {"Encounter", "Appointment", "ChargeItem", "Coverage"}


@pytest_twisted.inlineCallbacks
def test_a_server_error_is_retried_and_a_refused_bundle_ends_in_error(tmp_path, fhir_server):
    """A 503 then success: SENT on the retry. A 400 with an OperationOutcome: the message is ERROR."""
    fhir_server.fail_next(503, operation_outcome("transient", "restarting"))
    engine = start_engine(make_config(tmp_path, text=ENGINE_CONFIG % fhir_server.url))
    try:
        adt, oru = samples()[:2]
        assert (yield in_thread(send_all, port_of(engine), [adt])) == ["AA"]
        yield wait_until(lambda: _all(engine, Status.SENT, 1))  # 503, then processed on the retry
        assert len(fhir_server.received) == 1 and not fhir_server.script
        fhir_server.fail_next(400, operation_outcome("invalid", "no", "Bundle.entry[0]"))
        assert (yield in_thread(send_all, port_of(engine), [oru])) == ["AA"]
        done = yield wait_until(lambda: _all(engine, None, 2))
        assert done == {"ADM-7": Status.SENT, "LAB-1": Status.ERROR}
        assert len(fhir_server.headers) == 3  # the 503, its retry, the 400 (not tried again)
    finally:
        yield engine.stopService()
    assert len(fhir_server.received) == 1  # the ORU was refused, not stored


@defer.inlineCallbacks
def _all(engine, status: Status | None, count: int):
    """{control id: status} once ``count`` messages are settled (SENT or ERROR; ``status`` if given)."""
    found = yield statuses(engine)
    settled = {key: value for key, value in found.items() if value in (Status.SENT, Status.ERROR)}
    if len(settled) < count or (status is not None and set(settled.values()) != {status}):
        return None
    return settled
