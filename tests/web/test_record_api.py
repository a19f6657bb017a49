"""engine/web/record.py: the worklist and an operator's merge, link, unlink, unmerge, resolve over HTTP."""

from __future__ import annotations

import json

import pytest_twisted

from engine.record.ingest import RecordIngestor
from engine.web.audit import Auditor
from engine.web.record import OPENAPI_PATHS, record_resources
from tests.fakes.harness import in_thread
from tests.fakes.record import Feeder, hl7
from tests.fakes.web import audit_rows, basic, fetch

ANNA = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F"


def _twins(store) -> None:
    """Two registrations of one name, birth date and sex from PMS and EMR: a possible duplicate."""
    engine = store.repository.engine
    feed = Feeder(engine, RecordIngestor(engine))
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", ANNA))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", ANNA.replace("P-1^^^PMS", "E-1^^^EMR"), sender="EMR"))


def post(web, action: str, body, headers=None):
    """POST a JSON body to /api/record/ACTION (as alice unless ``headers``); a Deferred of the Response."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return in_thread(
        fetch,
        f"{web.url}/api/record/{action}",
        "POST",
        headers={**(basic() if headers is None else headers), "Content-Type": "application/json"},
        body=data,
    )


def test_every_route_declares_its_role():
    """Each /api/record route is in OPENAPI_PATHS with x-role operator."""
    assert {path: [op["x-role"] for op in ops.values()] for path, ops in OPENAPI_PATHS.items()} == {
        f"/api/record/{name}": ["operator"]
        for name in ("worklist", "merge", "link", "unlink", "unmerge", "resolve")
    }


@pytest_twisted.inlineCallbacks
def test_without_login_every_route_is_401(start_web, store):
    """No credentials: the worklist and every action answer 401 and change nothing."""
    _twins(store)
    web = start_web(extra_resources=record_resources(store, auditor=Auditor(store)))
    listed = yield in_thread(fetch, f"{web.url}/api/record/worklist")
    assert listed.status == 401
    for action in ("merge", "link"):
        response = yield post(web, action, {"survivor": 1, "prior": 2, "reason": "x"}, headers={})
        assert response.status == 401
    answered = yield in_thread(fetch, f"{web.url}/api/record/worklist", headers=basic())
    assert len(answered.json()["items"]) == 1


@pytest_twisted.inlineCallbacks
def test_worklist_merge_unmerge_link_unlink_resolve_round_trip(start_web, store):
    """The worklist lists the duplicate; each action answers JSON, audited as alice; refusals are 4xx."""
    _twins(store)
    web = start_web(extra_resources=record_resources(store, auditor=Auditor(store)))
    listed = yield in_thread(fetch, f"{web.url}/api/record/worklist", headers=basic())
    [item] = listed.json()["items"]
    assert (item["kind"], item["patient_id"], item["other_patient_id"]) == ("possible_duplicate", 2, 1)
    steps = [
        ("merge", {"survivor": 1, "prior": 2, "reason": "same"}, {"merge_id": 1}),
        ("unmerge", {"merge_id": 1, "reason": "wrong"}, {"moved": 1}),
        ("link", {"survivor": 1, "prior": 2, "reason": "same"}, {"merge_id": 2}),
        ("unlink", {"merge_id": 2, "reason": "wrong"}, {"moved": 1}),
        ("resolve", {"conflict_id": item["id"], "reason": "two people"}, {"conflict_id": item["id"]}),
    ]
    for action, body, answer in steps:
        response = yield post(web, action, body)
        assert (response.status, response.json()) == (200, answer), action
    again = yield post(web, "unlink", {"merge_id": 2, "reason": "again"})
    assert again.status == 409
    missing = yield post(web, "merge", {"survivor": 1, "prior": 99, "reason": "x"})
    assert missing.status == 404
    for bad in (
        b"not json",
        {"merge_id": 1},
        {"merge_id": "1", "reason": "x"},
        {"merge_id": 1, "reason": "x", "y": 1},
    ):
        response = yield post(web, "unmerge", bad)
        assert response.status == 400, bad
    actions = [(user, action) for user, action, _, _, _ in audit_rows(store)]
    assert actions == [("alice", "patient.worklist")] + [
        ("alice", f"patient.{name}") for name in ("merge", "unmerge", "link", "unlink", "resolve")
    ]
