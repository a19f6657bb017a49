"""engine/web/messages.py: search, view, raw, resend and reprocess of stored messages; audit trail; queues."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer
from twisted.web.test.requesthelper import DummyRequest

from engine.model import NewDelivery, Status
from engine.store.cipher import Cipher
from engine.store.reads import MessageQuery
from engine.store.retention import RetentionPolicy, RetentionRepository
from engine.web.messages import BadRequest, message_query
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message
from tests.fakes.web import BROWSER, audit_rows, basic, fetch, login, session_cookie


def search_request(**params: str | list[str]) -> DummyRequest:
    """A GET /api/messages request with these query parameters (a list: given that many times)."""
    request = DummyRequest([b""])
    request.args = {
        name.encode(): [value.encode() for value in (values if isinstance(values, list) else [values])]
        for name, values in params.items()
    }
    return request


@pytest_twisted.inlineCallbacks
def test_basic_credentials_open_the_search(start_web, store):
    """With Basic credentials a search returns summaries, newest first, and never the content."""
    yield store.add([pms_message(1), pms_message(2, message_code="ORU", trigger_event="R01")])
    web = start_web()
    found = yield in_thread(fetch, f"{web.url}/api/messages", headers=basic())
    assert found.status == 200
    assert found.header("cache-control") == "no-store"
    assert [(m["id"], m["control_id"], m["type"]) for m in found.json()] == [
        (2, "CTRL2", "ORU^R01"),
        (1, "CTRL1", "ADT^A04"),
    ]
    assert all("raw" not in m and "ack" not in m for m in found.json())
    filtered = yield in_thread(
        fetch,
        f"{web.url}/api/messages?type=ADT&sender=PMS/CLINIC&status=transformed&since=2026-01-01T00:00:00Z&limit=10",
        headers=basic(),
    )
    assert [m["id"] for m in filtered.json()] == [1]
    paged = yield in_thread(fetch, f"{web.url}/api/messages?before_id=2", headers=basic())
    assert [m["id"] for m in paged.json()] == [1]
    assert audit_rows(store) == []  # summaries are not audited views


@pytest_twisted.inlineCallbacks
def test_bad_search_parameters_are_400_with_the_reason(start_web):
    """A parameter the API cannot use is refused with a JSON 400 that names it."""
    web = start_web()
    for query, word in (
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("before_id=x", "before_id"),
        ("since=yesterday", "since"),
        ("type=ADT&type=ORU", "type"),
        ("status=bogus", "status must be one of RECEIVED, REJECTED"),
    ):
        response = yield in_thread(fetch, f"{web.url}/api/messages?{query}", headers=basic())
        assert response.status == 400, query
        assert word in response.json()["error"]


@pytest_twisted.inlineCallbacks
def test_viewing_a_message_writes_one_audit_row_per_view(start_web, store):
    """Each view of a message (JSON or raw bytes) writes one audit row: user, message id, address, what."""
    [message_id] = yield store.add([pms_message(7)])
    web = start_web()
    view = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert view.status == 200
    shown = view.json()
    assert shown["raw"] == pms_message(7).raw.decode()
    assert shown["ack"].startswith("MSH|^~\\&|HUB|TEST")
    assert (shown["deliveries"], shown["events"]) == ([], [])
    raw = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/raw", headers=basic())
    assert raw.body == pms_message(7).raw
    assert raw.header("content-disposition") == f'attachment; filename="message-{message_id}.hl7"'
    again = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert again.status == 200
    assert audit_rows(store) == [
        ("alice", "view", message_id, "127.0.0.1", ""),
        ("alice", "raw", message_id, "127.0.0.1", ""),
        ("alice", "view", message_id, "127.0.0.1", ""),
    ]
    trail = yield in_thread(fetch, f"{web.url}/api/audit?limit=2", headers=basic())
    assert [(e["action"], e["user"], e["message_id"]) for e in trail.json()] == [
        ("view", "alice", message_id),
        ("raw", "alice", message_id),
    ]
    missing = yield in_thread(fetch, f"{web.url}/api/messages/999", headers=basic())
    assert missing.status == 404
    assert len(audit_rows(store)) == 3


@pytest_twisted.inlineCallbacks
def test_a_view_that_cannot_be_audited_shows_nothing(start_web, store):
    """When the audit row cannot be written the answer is 503 and carries none of the message."""
    [message_id] = yield store.add([pms_message(3)])
    web = start_web()
    with store.repository.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE audit_log"))
    response = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    assert response.status == 503
    assert b"CTRL3" not in response.body and b"DOE" not in response.body


@pytest_twisted.inlineCallbacks
def test_resend_and_reprocess_are_audited_and_guarded(start_web, store):
    """Resend and reprocess are audited POSTs; a session POST needs the browser header; no cross-site POST."""
    [message_id] = yield store.add([pms_message(5)])
    web = start_web()
    resent = yield in_thread(
        fetch, f"{web.url}/api/messages/{message_id}/resend?destination=emr", "POST", headers=basic()
    )
    assert resent.json() == {"message_id": message_id, "deliveries": []}
    again = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/reprocess", "POST", headers=basic())
    assert again.json() == {"message_id": message_id, "reprocessed": True}
    stored = yield store.get(message_id)
    assert stored.status == Status.RECEIVED
    assert [row[1:3] + row[4:] for row in audit_rows(store)] == [
        ("resend", message_id, "destination=emr"),
        ("reprocess", message_id, ""),
    ]

    cookie = session_cookie((yield login(web)))
    no_header = yield in_thread(
        fetch, f"{web.url}/api/messages/{message_id}/reprocess", "POST", headers=cookie
    )
    assert no_header.status == 403
    cross_site = yield in_thread(
        fetch,
        f"{web.url}/api/messages/{message_id}/reprocess",
        "POST",
        headers={**basic(), "Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    read_only = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/resend", headers=basic())
    assert read_only.status == 405
    assert [row[1] for row in audit_rows(store)] == ["resend", "reprocess", "login"]


@pytest_twisted.inlineCallbacks
def test_queue_depths_are_listed(start_web, store):
    """/api/queues lists the queues that hold deliveries."""
    web = start_web()
    response = yield in_thread(fetch, f"{web.url}/api/queues", headers=basic())
    assert (response.status, response.json()) == (200, [])


def test_a_search_request_becomes_a_message_query():
    """Parameters map to MessageQuery: sender splits at '/', status is upper-cased, no offset means UTC."""
    query = message_query(
        search_request(
            control_id="CTRL1",
            patient_id="P-1",
            type="ADT^A01",
            sender="PMS/CLINIC",
            status="queued",
            channel="adt",
            listener="main",
            since="2026-01-01T08:00:00",
            until="2026-01-02T08:00:00+01:00",
            limit="20",
            before_id="99",
        )
    )
    assert query == MessageQuery(
        control_id="CTRL1",
        patient_id="P-1",
        message_type="ADT^A01",
        sending_application="PMS",
        sending_facility="CLINIC",
        status="QUEUED",
        channel="adt",
        listener="main",
        since=datetime(2026, 1, 1, 8, tzinfo=UTC),
        until=datetime(2026, 1, 2, 7, tzinfo=UTC),
        limit=20,
        before_id=99,
    )
    assert message_query(search_request(sender="PMS", control_id=" ")) == MessageQuery(
        sending_application="PMS", limit=50
    )


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"colour": "red"}, "unknown parameter 'colour'"),
        ({"type": ["ADT", "ORU"]}, "parameter 'type' given 2 times"),
        ({"limit": "0"}, "limit must be a whole number 1..500"),
        ({"limit": "-5"}, "limit must be a whole number 1..500"),
        ({"before_id": "0"}, "before_id must be a whole number 1..9223372036854775807"),
        ({"before_id": "9" * 30}, "before_id must be a whole number 1..9223372036854775807"),
        ({"until": "31/01/2025"}, "until must be an ISO 8601 time"),
    ],
)
def test_a_search_parameter_that_cannot_be_used_is_a_bad_request(params, reason):
    """message_query raises BadRequest naming the parameter and what it must be."""
    with pytest.raises(BadRequest, match=reason):
        message_query(search_request(**params))


@pytest_twisted.inlineCallbacks
def test_a_view_shows_deliveries_and_events_with_their_content_decoded(start_web, store):
    """A view lists the deliveries with their payloads and the events; content is decoded by MSH-18."""
    raw = pms_message(9).raw.replace(b"|P|2.5.1\r", b"|P|2.5.1||||||8859/1\r").replace(b"JANE", b"REN\xc9E")
    payload = raw.replace(b"HUB|TEST", b"EMR|WARD")
    [message_id] = yield store.add(
        [
            pms_message(
                9,
                raw=raw,
                status=Status.RECEIVED,
                charset="8859/1",
                deliveries=(NewDelivery("emr", Status.QUEUED, "CTRL9", payload),),
            )
        ]
    )
    web = start_web()
    view = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    shown = view.json()
    assert "RENÉE" in shown["raw"]
    ((delivery,), events) = shown["deliveries"], shown["events"]
    assert (delivery["destination"], delivery["status"], delivery["attempts"]) == ("emr", "QUEUED", 0)
    assert delivery["payload"].startswith("MSH|^~\\&|PMS|CLINIC|EMR|WARD") and "RENÉE" in delivery["payload"]
    assert events and all(set(event) == {"id", "at", "status", "detail", "destination"} for event in events)
    queues = yield in_thread(fetch, f"{web.url}/api/queues", headers=basic())
    assert queues.json() == [{"channel": "adt", "destination": "emr", "depth": 1}]


@pytest_twisted.inlineCallbacks
def test_paths_that_name_no_message_or_action_are_404_and_not_audited(start_web, store):
    """A non-numeric or out-of-range id, an unknown action or message answers 404, never 5xx; no audit row."""
    [message_id] = yield store.add([pms_message(4)])
    web = start_web()
    huge = "9" * 40
    for method, path, error in (
        ("GET", "/api/messages/abc", "no message 'abc': ids are 1..9223372036854775807"),
        ("GET", f"/api/messages/{huge}", f"no message '{huge}': ids are 1..9223372036854775807"),
        (
            "GET",
            "/api/messages/9223372036854775808",
            "no message '9223372036854775808': ids are 1..9223372036854775807",
        ),
        ("GET", "/api/messages/%C2%B2", "no message '²': ids are 1..9223372036854775807"),
        ("GET", "/api/messages/0", "no message '0': ids are 1..9223372036854775807"),
        ("GET", "/api/messages/9223372036854775807", "no message 9223372036854775807"),
        ("GET", f"/api/messages/{message_id}/nothing", "no such resource"),
        ("POST", "/api/messages/999/reprocess", "no message 999"),
        ("POST", "/api/messages/999/resend", "no message 999"),
        ("GET", "/api/messages/999/raw", "no message 999"),
    ):
        response = yield in_thread(fetch, web.url + path, method, headers=basic())
        assert (response.status, response.json()) == (404, {"error": error}), path
    assert audit_rows(store) == []


@pytest_twisted.inlineCallbacks
def test_a_view_or_change_with_parameters_it_does_not_take_is_400_and_not_audited(start_web, store):
    """Views and reprocess take no parameter, resend only ``destination``: others are 400, not audited."""
    [message_id] = yield store.add([pms_message(6)])
    web = start_web()
    for method, path in (
        ("GET", f"/api/messages/{message_id}?x=1"),
        ("GET", f"/api/messages/{message_id}/raw?x=1"),
        ("POST", f"/api/messages/{message_id}/reprocess?destination=emr"),
        ("POST", f"/api/messages/{message_id}/resend?channel=adt"),
    ):
        response = yield in_thread(fetch, web.url + path, method, headers=basic())
        assert response.status == 400, path
    assert audit_rows(store) == []


@pytest_twisted.inlineCallbacks
def test_the_audit_trail_filters_by_user_and_message_and_pages(start_web, store):
    """/api/audit answers newest first, filtered by ``user`` and ``message_id``, paged by ``before_id``."""
    [first, second] = yield store.add([pms_message(1), pms_message(2)])
    web = start_web()
    for message_id in (first, second, first):
        yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    yield login(web)
    everything = (yield in_thread(fetch, f"{web.url}/api/audit", headers=basic())).json()
    assert [(e["action"], e["message_id"]) for e in everything] == [
        ("login", None),
        ("view", first),
        ("view", second),
        ("view", first),
    ]
    ids = [entry["id"] for entry in everything]
    by_message = yield in_thread(fetch, f"{web.url}/api/audit?message_id={first}", headers=basic())
    assert [e["id"] for e in by_message.json()] == [ids[1], ids[3]]
    page = yield in_thread(fetch, f"{web.url}/api/audit?before_id={ids[1]}&limit=1", headers=basic())
    assert [e["id"] for e in page.json()] == [ids[2]]
    nobody = yield in_thread(fetch, f"{web.url}/api/audit?user=bob", headers=basic())
    assert nobody.json() == []
    too_many = yield in_thread(fetch, f"{web.url}/api/audit?limit=501", headers=basic())
    assert too_many.status == 400


@pytest_twisted.inlineCallbacks
def test_the_session_api_names_the_user_however_they_logged_in(start_web):
    """/api/session answers the authenticated user, for Basic credentials and for a console session alike."""
    web = start_web()
    by_script = yield in_thread(fetch, f"{web.url}/api/session", headers=basic())
    cookie = session_cookie((yield login(web)))
    by_browser = yield in_thread(fetch, f"{web.url}/api/session", headers={**cookie, **BROWSER})
    assert by_script.json() == by_browser.json() == {"user": "alice", "role": "admin"}


@pytest_twisted.inlineCallbacks
def test_a_pruned_message_shows_when_its_content_went_and_its_raw_is_gone(start_web, store):
    """A message retention pruned: the view says pruned_at with no content; /raw answers 410 Gone."""
    [message_id] = yield store.add([pms_message(8, status=Status.SENT)])
    retention = RetentionRepository(store.repository.engine)
    yield in_thread(retention.prune, RetentionPolicy(default_days=1), limit=10)
    web = start_web()
    view = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}", headers=basic())
    shown = view.json()
    assert shown["pruned_at"] is not None and shown["raw"] == "" and shown["transformed"] is None
    assert (shown["control_id"], shown["status"]) == ("CTRL8", "SENT")
    raw = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/raw", headers=basic())
    assert raw.status == 410 and "retention" in raw.json()["error"]


def _patient(n: int, family: str):
    """pms_message ``n`` about patient family^JANE."""
    return pms_message(n, raw=pms_message(n).raw.replace(b"DOE^JANE", family.encode() + b"^JANE"))


@pytest_twisted.inlineCallbacks
def test_q_searches_the_content_with_the_other_filters(start_web, store):
    """``q`` finds messages by the patient's name (a word's start, any case), with any other filter."""
    yield store.add([_patient(1, "SMITH"), _patient(2, "SMYTHE"), _patient(3, "JONES")])
    yield store.index_pending()  # as the engine's ContentIndexer does shortly after
    web = start_web()
    for query, ids in (
        ("q=smith", [1]),
        ("q=Sm", [2, 1]),
        ("q=sm%20jane&before_id=2", [1]),
        ("q=nobody", []),
    ):
        found = yield in_thread(fetch, f"{web.url}/api/messages?{query}", headers=basic())
        assert [m["id"] for m in found.json()] == ids, query
    empty = yield in_thread(fetch, f"{web.url}/api/messages?q=%5E%7E", headers=basic())
    assert empty.status == 400 and "letter or digit" in empty.json()["error"]


@pytest_twisted.inlineCallbacks
def test_bulk_resend_acts_on_every_match_once_the_count_is_confirmed(start_web, store):
    """A bulk resend needs the count the caller saw: another is a 409 with the count now, and nothing done."""
    ids = yield store.add([_patient(n, "SMITH" if n < 4 else "JONES") for n in range(1, 6)])
    yield store.index_pending()
    web = start_web()
    counted = yield in_thread(fetch, f"{web.url}/api/messages/count?q=smith", headers=basic())
    assert counted.json() == {"count": 3}
    url = f"{web.url}/api/messages/resend?q=smith&destination=emr"
    missing = yield in_thread(fetch, url, "POST", headers=basic())
    assert missing.status == 400 and "expected_count" in missing.json()["error"]
    stale = yield in_thread(fetch, f"{url}&expected_count=2", "POST", headers=basic())
    assert (stale.status, stale.json()["count"]) == (409, 3)
    assert audit_rows(store) == []
    done = yield in_thread(fetch, f"{url}&expected_count=3", "POST", headers=basic())
    assert done.json() == {"count": 3, "deliveries": 0}
    assert audit_rows(store) == [
        ("alice", "resend.bulk", None, "127.0.0.1", f"count=3 filters=q messages={ids[2]},{ids[1]},{ids[0]}")
    ]
    reprocess = yield in_thread(
        fetch, f"{web.url}/api/messages/reprocess?q=jones&expected_count=2", "POST", headers=basic()
    )
    assert reprocess.json() == {"count": 2, "reprocessed": 2}
    statuses = yield defer.gatherResults([store.get(i) for i in ids])
    assert [s.status for s in statuses] == [Status.TRANSFORMED] * 3 + [Status.RECEIVED] * 2
    unknown = yield in_thread(fetch, f"{url}&expected_count=3&limit=5", "POST", headers=basic())
    assert unknown.status == 400 and "limit" in unknown.json()["error"]


@pytest_twisted.inlineCallbacks
def test_with_content_encrypted_q_is_refused_and_other_filters_work(start_web, open_sqlite_store):
    """No index is kept of sealed content: ``q`` (search, count, bulk) answers 400 saying so."""
    sealed = open_sqlite_store(cipher=Cipher({"k": b"k" * 32}, "k"))
    yield sealed.add([_patient(1, "SMITH")])
    yield sealed.index_pending()
    web = start_web(on=sealed)
    for method, path in (
        ("GET", "/api/messages?q=smith"),
        ("GET", "/api/messages/count?q=smith"),
        ("POST", "/api/messages/resend?q=smith&expected_count=1"),
    ):
        refused = yield in_thread(fetch, f"{web.url}{path}", method, headers=basic())
        assert (refused.status, "encrypted" in refused.json()["error"]) == (400, True), path
    found = yield in_thread(fetch, f"{web.url}/api/messages?control_id=CTRL1", headers=basic())
    assert [m["control_id"] for m in found.json()] == ["CTRL1"]
