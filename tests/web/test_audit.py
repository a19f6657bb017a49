"""engine/web/audit.py: the Auditor writes who did what from where, on the store's writer thread."""

from __future__ import annotations

import pytest
import pytest_twisted

from engine.store.audit import AuditEntry
from engine.web.audit import Auditor
from engine.web.auth import IPrincipal, Principal
from tests.fakes.messages import T0
from tests.fakes.web import http_request


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
