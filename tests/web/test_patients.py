"""engine/web/patients.py: the patient routes of the console, with each patient's history."""

from __future__ import annotations

import pytest_twisted

from engine.record.ingest import RecordIngestor
from engine.web.audit import Auditor
from engine.web.patients import OPENAPI_PATHS, patient_resources
from tests.fakes.harness import in_thread
from tests.fakes.record import Feeder, feed_journey
from tests.fakes.web import audit_rows, basic, fetch


@pytest_twisted.inlineCallbacks
def test_a_patients_history_lists_the_changes_of_its_values_and_rows_newest_first(start_web, store):
    """GET /api/patients/{id}/history: the person's record_history rows, newest first, audited."""
    engine = store.repository.engine
    feed_journey(Feeder(engine, RecordIngestor(engine)))
    web = start_web(extra_resources=patient_resources(store, auditor=Auditor(store)))
    response = yield in_thread(fetch, f"{web.url}/api/patients/1/history", headers=basic())
    changes = response.json()["history"]
    assert changes, "the journey changes patient 1"
    assert {"entity", "entity_id", "field", "old_value", "new_value", "cause", "at"} <= set(changes[0])
    assert [c["at"] for c in changes] == sorted((c["at"] for c in changes), reverse=True)
    assert any(c["entity"] == "record_patients" and c["entity_id"] == 1 for c in changes)
    found = yield in_thread(fetch, f"{web.url}/api/patients?name=garc", headers=basic())
    assert [p["id"] for p in found.json()["patients"]] == [1]
    wrong = yield in_thread(fetch, f"{web.url}/api/patients/1/changes", headers=basic())
    assert wrong.status == 404
    assert [row[1:] for row in audit_rows(store)] == [
        ("patient.history", None, "127.0.0.1", "patient 1"),
        ("patient.search", None, "127.0.0.1", "criteria=name patients=1"),
    ]


def test_every_patient_route_needs_an_operator():
    """Patients are person data: no route of theirs is open to a viewer."""
    assert {op["x-role"] for path in OPENAPI_PATHS.values() for op in path.values()} == {"operator"}
