"""engine/web/roles.py and the gate: each route's least role, enforced over real HTTP; answers by role."""

from __future__ import annotations

import pytest
import pytest_twisted

from engine.model import NewDelivery, Status
from engine.web.api import patient_resources
from engine.web.openapi import policy
from engine.web.roles import ADMIN, OPERATOR, VIEWER, RolePolicy, may, without_content, without_person_data
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message
from tests.fakes.web import BROWSER, ROLE_USERS, audit_rows, basic, fetch, login, session_cookie


def test_each_role_includes_the_ones_below_it():
    """viewer < operator < admin; an unknown role includes nothing."""
    assert [may(VIEWER, needed) for needed in (VIEWER, OPERATOR, ADMIN)] == [True, False, False]
    assert [may(OPERATOR, needed) for needed in (VIEWER, OPERATOR, ADMIN)] == [True, True, False]
    assert [may(ADMIN, needed) for needed in (VIEWER, OPERATOR, ADMIN)] == [True, True, True]
    assert not may("root", VIEWER)


def test_the_policy_matches_templates_prefers_literals_and_defaults_to_admin():
    """A literal segment beats a template; HEAD is GET; empty segments are ignored; unknown needs admin."""
    roles = RolePolicy(
        {
            "/api/things/{id}": {"get": {"x-role": "viewer"}, "post": {"x-role": "operator"}},
            "/api/things/mine": {"get": {"x-role": "admin"}},
            "/api/things": {"get": {"x-role": "viewer"}, "parameters": []},
        }
    )
    assert roles.needed("GET", ["api", "things", "7"]) == VIEWER
    assert roles.needed("HEAD", ["api", "things", "7"]) == VIEWER
    assert roles.needed("POST", ["api", "things", "7"]) == OPERATOR
    assert roles.needed("GET", ["api", "things", "mine"]) == ADMIN
    assert roles.needed("GET", ["api", "things", ""]) == VIEWER  # /api/things/
    assert roles.needed("GET", ["api", "", "things"]) == VIEWER  # /api//things
    assert roles.needed("DELETE", ["api", "things", "7"]) == ADMIN
    assert roles.needed("GET", ["api", "things", "7", "secret"]) == ADMIN
    assert roles.needed("GET", ["api", "elsewhere"]) == ADMIN
    with pytest.raises(ValueError, match="x-role must be one of viewer, operator, admin"):
        RolePolicy({"/api/x": {"get": {"summary": "no role"}}})


def test_the_engine_policy_gives_content_to_operators_and_the_trail_to_admins():
    """The policy built from the API modules: metadata for viewers, content and actions for operators."""
    roles = policy()
    expected = {
        ("GET", "api/messages"): VIEWER,
        ("GET", "api/messages/5"): VIEWER,
        ("GET", "api/messages/5/raw"): OPERATOR,
        ("POST", "api/messages/5/resend"): OPERATOR,
        ("POST", "api/messages/5/reprocess"): OPERATOR,
        ("GET", "api/queues"): VIEWER,
        ("GET", "api/nodes"): VIEWER,
        ("GET", "api/session"): VIEWER,
        ("GET", "api/openapi.json"): VIEWER,
        ("GET", "api/patients"): OPERATOR,
        ("GET", "api/patients/5"): OPERATOR,
        ("GET", "fhir/Patient/5/$everything"): OPERATOR,
        ("GET", "api/audit"): ADMIN,
        ("GET", "api/config"): ADMIN,
        ("GET", "api/config/history"): ADMIN,
        ("GET", "api/config/history/3"): ADMIN,
        ("GET", "api/config/diff"): ADMIN,
        ("POST", "api/config"): ADMIN,
    }
    assert {key: roles.needed(key[0], key[1].split("/")) for key in expected} == expected


def _get(web, path: str, user: str, method: str = "GET"):
    return in_thread(fetch, f"{web.url}{path}", method, headers=basic(user))


@pytest_twisted.inlineCallbacks
def test_a_viewer_is_refused_content_actions_patients_audit_and_config(start_web, store):
    """A viewer gets 403 (naming the role needed) for raw, resend, reprocess, patients, audit, config."""
    [message_id] = yield store.add([pms_message(1)])
    web = start_web(users=ROLE_USERS, extra_resources=patient_resources(store))
    refused = {
        ("GET", f"/api/messages/{message_id}/raw"): "operator",
        ("POST", f"/api/messages/{message_id}/resend"): "operator",
        ("POST", f"/api/messages/{message_id}/reprocess"): "operator",
        ("GET", "/api/messages?patient_id=P-1"): "operator",
        ("GET", "/api/patients?name=DOE"): "operator",
        ("GET", "/fhir/Patient/1/$everything"): "operator",
        ("GET", "/api/audit"): "admin",
        ("GET", "/api/config"): "admin",
        ("GET", "/api/config/history"): "admin",
        ("GET", "/api/nowhere"): "admin",
    }
    for (method, path), needed in refused.items():
        response = yield _get(web, path, "vera", method)
        assert (response.status, needed in response.json()["error"]) == (403, True), path
    allowed = ("/api/messages", f"/api/messages/{message_id}", "/api/queues", "/api/nodes", "/api/session")
    for path in allowed:
        assert (yield _get(web, path, "vera")).status == 200, path
    assert [action for _, action, *_ in audit_rows(store)] == ["view"]  # refusals touched nothing


@pytest_twisted.inlineCallbacks
def test_an_operator_has_content_and_actions_but_not_audit_or_config(start_web, store):
    """An operator reads raw bytes and resends; the audit trail and the configuration are the admin's."""
    [message_id] = yield store.add([pms_message(2, status=Status.SENT)])
    web = start_web(users=ROLE_USERS, extra_resources=patient_resources(store))
    raw = yield _get(web, f"/api/messages/{message_id}/raw", "otto")
    assert (raw.status, raw.body) == (200, pms_message(2).raw)
    resent = yield _get(web, f"/api/messages/{message_id}/resend", "otto", "POST")
    assert resent.status == 200
    assert (yield _get(web, "/api/patients?name=DOE", "otto")).status == 200
    for path in ("/api/audit", "/api/config", "/api/config/diff?from=1&to=2"):
        assert (yield _get(web, path, "otto")).status == 403, path
    for path in ("/api/audit", "/api/config", "/api/config/history", "/api/openapi.json"):
        assert (yield _get(web, path, "alice")).status == 200, path


@pytest_twisted.inlineCallbacks
def test_a_viewer_sees_metadata_without_content_or_person_data(start_web, store):
    """A viewer's search hides patient_id; a viewer's view nulls every content field, deliveries' too."""
    payload = pms_message(3).raw.replace(b"HUB|TEST", b"EMR|WARD")
    [message_id] = yield store.add(
        [pms_message(3, patient_id="P-1", deliveries=(NewDelivery("emr", Status.QUEUED, "CTRL3", payload),))]
    )
    web = start_web(users=ROLE_USERS)
    as_operator = (yield _get(web, "/api/messages", "otto")).json()
    as_viewer = (yield _get(web, "/api/messages", "vera")).json()
    assert as_operator[0]["patient_id"] == "P-1" and as_viewer[0]["patient_id"] is None
    assert {**as_viewer[0], "patient_id": as_operator[0]["patient_id"]} == as_operator[0]
    full = (yield _get(web, f"/api/messages/{message_id}", "otto")).json()
    shown = (yield _get(web, f"/api/messages/{message_id}", "vera")).json()
    assert full["raw"] and full["ack"] and full["deliveries"][0]["payload"]
    assert (shown["raw"], shown["ack"], shown["transformed"], shown["patient_id"]) == (None, None, None, None)
    (delivery,) = shown["deliveries"]
    assert (delivery["destination"], delivery["status"], delivery["payload"], delivery["response"]) == (
        "emr",
        "QUEUED",
        None,
        None,
    )
    assert shown["content_hidden"] is True and "content_hidden" not in full
    assert (shown["control_id"], shown["type"], shown["events"]) == (
        full["control_id"],
        full["type"],
        full["events"],
    )
    assert b"DOE" not in (yield _get(web, f"/api/messages/{message_id}", "vera")).body  # nor its name
    assert [(s["stage"], s["text"], s["segments"]) for s in shown["stages"]] == [
        (s["stage"], None, None) for s in full["stages"]
    ]
    assert full["stages"][0]["text"].startswith("MSH|")


@pytest_twisted.inlineCallbacks
def test_a_viewer_may_not_search_by_content_but_may_count(start_web, store):
    """q (the content) is an operator's in a search and a count (403 for a viewer); a plain count is not."""
    yield store.add([pms_message(3)])
    yield store.index_pending()  # as the engine's ContentIndexer does shortly after
    web = start_web(users=ROLE_USERS)
    for path in ("/api/messages?q=doe", "/api/messages/count?q=doe"):
        refused = yield _get(web, path, "vera")
        assert (refused.status, refused.json()) == (
            403,
            {"error": "searching by content (q) needs the operator role"},
        )
    assert (yield _get(web, "/api/messages/count", "vera")).json() == {"count": 1}
    assert (yield _get(web, "/api/messages/count?q=doe", "otto")).json() == {"count": 1}


@pytest_twisted.inlineCallbacks
def test_the_session_and_the_login_say_the_role(start_web):
    """POST /login and GET /api/session answer the user's role; a console session is held to it too."""
    web = start_web(users=ROLE_USERS)
    logged_in = yield login(web, "vera")
    assert logged_in.json() == {"user": "vera", "role": "viewer"}
    cookie = session_cookie(logged_in)
    session = yield in_thread(fetch, f"{web.url}/api/session", headers={**BROWSER, **cookie})
    assert session.json() == {"user": "vera", "role": "viewer"}
    audit = yield in_thread(fetch, f"{web.url}/api/audit", headers={**BROWSER, **cookie})
    assert audit.status == 403


def test_a_viewer_sees_only_fields_listed_as_metadata():
    """A field not known as metadata (content a later version adds) reads null for a viewer, nested too.

    A stage keeps its name, its text and fields read null.
    """
    message = {
        "id": 1,
        "status": "SENT",
        "stages": [{"stage": "received", "text": "MSH|...", "segments": [{"segment": "MSH"}]}],
        "sections": [{"raw": "MSH|..."}],
        "deliveries": [{"destination": "emr", "payload": "MSH|...", "sent_as": "MSH|..."}],
        "events": [{"status": "SENT", "content": "MSH|..."}],
    }
    assert without_content(message) == {
        "id": 1,
        "status": "SENT",
        "stages": [{"stage": "received", "text": None, "segments": None}],
        "sections": None,
        "deliveries": [{"destination": "emr", "payload": None, "sent_as": None}],
        "events": [{"status": "SENT", "content": None}],
        "content_hidden": True,
    }
    assert without_person_data({"id": 1, "patient_id": "P-1", "patient_name": "DOE"}) == {
        "id": 1,
        "patient_id": None,
        "patient_name": None,
    }
