"""The fhir destination against the test FHIR server on loopback: Bundles in, SENT/RETRY/ERROR out."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor

from engine.channels.destinations.fhir import FHIRDestination, outcome_text
from engine.channels.destinations.spec import FhirDestinationSettings
from engine.model import Outcome
from tests.fakes.fhirserver import operation_outcome
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
