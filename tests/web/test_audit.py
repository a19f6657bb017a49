"""engine/web/audit.py: the Auditor writes who did what from where, on the writer thread; /api/audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
import pytest_twisted

from engine.store.audit import AuditEntry
from engine.web.audit import Auditor
from engine.web.auth import IPrincipal, Principal
from tests.fakes.harness import in_thread
from tests.fakes.messages import T0, pms_message
from tests.fakes.web import basic, fetch, http_request, login


def admitted(user: str = "alice"):
    """A request from 10.0.0.5 that the gate admitted for ``user``."""
    request = http_request()
    request.setComponent(IPrincipal, Principal(user, "session", "operator"))
    return request


@pytest_twisted.inlineCallbacks
def test_an_entry_names_the_admitted_user_and_the_address_the_server_saw(store):
    """record() writes the request's user and remote address at the clock's time; fires with the entry id."""
    auditor = Auditor(store, clock=lambda: T0)
    entry_id = yield auditor.record(admitted(), "raw", message_id=3, detail="as received")
    assert auditor.repository.recent() == [
        AuditEntry(entry_id, T0, "alice", "raw", 3, "10.0.0.5", "as received")
    ]


@pytest_twisted.inlineCallbacks
def test_a_request_not_admitted_is_written_for_the_user_given(store):
    """A refused login has no admitted user: the name typed is written instead."""
    auditor = Auditor(store, clock=lambda: T0)
    yield auditor.record(http_request(), "login_failed", user="mallory")
    (entry,) = auditor.repository.recent()
    assert (entry.user, entry.action, entry.remote) == ("mallory", "login_failed", "10.0.0.5")
    with pytest.raises(RuntimeError, match="did not pass the gate"):
        auditor.record(http_request(), "view")


@pytest_twisted.inlineCallbacks
def test_recent_reads_the_trail_newest_first(store):
    """recent() fires with the repository's answer: newest first, limited and filtered as asked."""
    auditor = Auditor(store, clock=lambda: T0)
    first = yield auditor.record(admitted("alice"), "view", message_id=1)
    second = yield auditor.record(admitted("bob"), "view", message_id=2)
    newest = yield auditor.recent(1)
    alices = yield auditor.recent(user="alice")
    assert ([e.id for e in newest], [e.id for e in alices]) == ([second], [first])


@pytest_twisted.inlineCallbacks
def test_the_trail_is_filtered_by_user_action_and_time_and_paged(start_web, store):
    """GET /api/audit?user=&action=&since=&before_id=&limit= narrows the trail; a bad time is 400."""
    times = iter([T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)])
    auditor = Auditor(store, clock=lambda: next(times))
    first = yield auditor.record(admitted("alice"), "view", message_id=1)
    second = yield auditor.record(admitted("bob"), "resend", message_id=1)
    third = yield auditor.record(admitted("alice"), "resend", message_id=2)
    web = start_web()

    def ids(query: str):
        d = in_thread(fetch, f"{web.url}/api/audit?{query}", headers=basic())
        return d.addCallback(lambda response: [entry["id"] for entry in response.json()])

    assert (yield ids("action=resend")) == [third, second]
    assert (yield ids("user=alice&action=resend")) == [third]
    since = (T0 + timedelta(hours=1)).isoformat()
    assert (yield ids(f"since={since.replace('+', '%2B')}")) == [third, second]
    assert (yield ids(f"before_id={third}&limit=1")) == [second]
    assert (yield ids("message_id=1")) == [second, first]
    bad = yield in_thread(fetch, f"{web.url}/api/audit?since=yesterday", headers=basic())
    assert (bad.status, "since" in bad.json()["error"]) == (400, True)


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
