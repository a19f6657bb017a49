"""engine.web.api: patient search, patient JSON and the FHIR $everything Bundle over real loopback HTTP."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from fhir.resources.R4B.bundle import Bundle
from twisted.web import server
from twisted.web.client import Agent, readBody

from engine.record.ingest import RecordIngestor
from engine.web.api import build_api, patient_resources
from engine.web.audit import Auditor
from tests.fakes.harness import in_thread
from tests.fakes.record import Feeder, feed_journey
from tests.fakes.web import audit_rows, basic, fetch

# Twisted's Agent hands readBody a transport proxy without abortConnection; harmless for these short reads.
pytestmark = pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")


@pytest.fixture
def site_url(store):
    """The base URL of build_api() on loopback, over a started store holding the journey's record."""
    from twisted.internet import reactor

    engine = store.repository.engine
    feed_journey(Feeder(engine, RecordIngestor(engine)))
    port = reactor.listenTCP(0, server.Site(build_api(store)), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


async def get(url: str) -> tuple[int, bytes, bytes]:
    """GET ``url``: (status, content type, body)."""
    from twisted.internet import reactor

    response = await Agent(reactor).request(b"GET", url.encode())
    body = await readBody(response)
    return response.code, response.headers.getRawHeaders(b"content-type")[0], body


@pytest_twisted.ensureDeferred
async def test_search_by_identifier_name_and_birthdate(site_url):
    """identifier=AUTHORITY|VALUE, a bare value, and name+birthdate all find patient 1 (JSON)."""
    for query in (
        "identifier=STMARY_EMR%7CMRN-556677",
        "identifier=L-9981",
        "name=garc&birthdate=1980-05-17",
    ):
        code, content_type, body = await get(f"{site_url}/api/patients?{query}")
        assert (code, content_type) == (200, b"application/json; charset=utf-8")
        assert [patient["id"] for patient in json.loads(body)["patients"]] == [1]
    code, _, body = await get(f"{site_url}/api/patients?identifier=CITYLAB%7CMRN-556677")
    assert json.loads(body) == {"patients": []}


@pytest_twisted.ensureDeferred
async def test_search_refuses_what_it_cannot_use(site_url):
    """No criterion, an unknown parameter or a malformed birth date is a 400 with the reason."""
    answers = [
        await get(f"{site_url}/api/patients{query}") for query in ("", "?ssn=1", "?birthdate=17/05/1980")
    ]
    assert [(code, json.loads(body)["error"]) for code, _, body in answers] == [
        (400, "give at least one of identifier, name, birthdate"),
        (400, "unknown parameter 'ssn'; known: identifier, name, birthdate, limit"),
        (400, "birthdate must be YYYY, YYYY-MM or YYYY-MM-DD"),
    ]


@pytest_twisted.ensureDeferred
async def test_show_patient(site_url):
    """/api/patients/1 is the whole record as JSON; an unknown id is 404."""
    code, _, body = await get(f"{site_url}/api/patients/1")
    patient = json.loads(body)
    assert code == 200
    assert (patient["id"], len(patient["visits"]), len(patient["orders"]), len(patient["transactions"])) == (
        1,
        3,
        2,
        3,
    )
    code, _, body = await get(f"{site_url}/api/patients/99")
    assert (code, json.loads(body)) == (404, {"error": "there is no patient 99"})


@pytest_twisted.ensureDeferred
async def test_fhir_everything(site_url):
    """$everything answers application/fhir+json with a valid R4 Bundle whose fullUrls use this server."""
    code, content_type, body = await get(f"{site_url}/fhir/Patient/1/$everything")
    bundle = json.loads(body)
    assert (code, content_type) == (200, b"application/fhir+json; charset=utf-8")
    Bundle.model_validate(bundle)
    assert bundle["entry"][0]["fullUrl"] == f"{site_url}/fhir/Patient/1"
    assert len(bundle["entry"]) == 25
    code, content_type, body = await get(f"{site_url}/fhir/Patient/99/$everything")
    assert (code, content_type, json.loads(body)["resourceType"]) == (
        404,
        b"application/fhir+json; charset=utf-8",
        "OperationOutcome",
    )


def test_resources_for_the_gate():
    """patient_resources names the mount paths the web server's gate expects."""
    assert set(patient_resources(store=None)) == {"api/patients", "fhir"}


# -- behind the web server's gate, audited ------------------------------------------------------------


@pytest.fixture
def gated_record(start_web, store):
    """A RunningWeb serving the patient API behind its gate, with an auditor, over the journey's record."""
    engine = store.repository.engine
    feed_journey(Feeder(engine, RecordIngestor(engine)))
    return start_web(extra_resources=patient_resources(store, auditor=Auditor(store)))


@pytest_twisted.inlineCallbacks
def test_wildcard_or_empty_criteria_are_refused_and_not_run(gated_record):
    """A criterion matching everyone (%, _, *, only spaces, no letter or digit) is 400, not dropped."""
    web = gated_record
    for query in (
        "name=%25",
        "name=_",
        "name=*",
        "name=%20%20",
        "name=",
        "name=-'",
        "identifier=%25",
        "identifier=PMS%7C",
        "identifier=%2A",
        "birthdate=",
        "name=%25&birthdate=1980-05-17",
    ):
        response = yield in_thread(fetch, f"{web.url}/api/patients?{query}", headers=basic())
        assert response.status == 400, query
        assert "patients" not in response.json(), query
    assert [row for row in audit_rows(web.store) if row[1] == "patient.search"] == []


@pytest_twisted.inlineCallbacks
def test_a_search_and_a_view_are_audited_with_criteria_names_and_ids(gated_record):
    """A search writes one audit row naming the criteria and the ids found (never the values); a view too."""
    web = gated_record
    found = yield in_thread(fetch, f"{web.url}/api/patients?name=garc&birthdate=1980-05-17", headers=basic())
    assert [patient["id"] for patient in found.json()["patients"]] == [1]
    none = yield in_thread(fetch, f"{web.url}/api/patients?identifier=NOBODY", headers=basic())
    assert none.json() == {"patients": []}
    shown = yield in_thread(fetch, f"{web.url}/api/patients/1", headers=basic())
    assert shown.status == 200
    assert audit_rows(web.store) == [
        ("alice", "patient.search", None, "127.0.0.1", "criteria=name,birthdate patients=1"),
        ("alice", "patient.search", None, "127.0.0.1", "criteria=identifier patients="),
        ("alice", "patient.view", None, "127.0.0.1", "patient 1"),
    ]


@pytest_twisted.inlineCallbacks
def test_huge_or_malformed_patient_ids_are_404(gated_record):
    """Ids past 64 bits, zero, or not ASCII digits name no patient: 404, never a 5xx."""
    web = gated_record
    for path in (
        "/api/patients/" + "9" * 30,
        "/api/patients/0",
        "/api/patients/%C2%B2",
        "/fhir/Patient/" + "9" * 30 + "/$everything",
        "/api/patients/9223372036854775807",
    ):
        response = yield in_thread(fetch, web.url + path, headers=basic())
        assert response.status == 404, path
