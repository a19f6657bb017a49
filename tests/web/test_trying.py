"""engine/web/trying.py: POST /api/messages/{id}/try runs a stored message through a channel, audited."""

from __future__ import annotations

import pytest_twisted

from engine.model import Status
from engine.store.retention import RetentionPolicy, RetentionRepository
from tests.fakes.harness import in_thread
from tests.fakes.messages import pms_message
from tests.fakes.trial import try_actions
from tests.fakes.web import ROLE_USERS, audit_rows, basic, fetch


@pytest_twisted.inlineCallbacks
def test_try_shows_the_changes_of_the_messages_own_channel_and_is_audited(start_web, store):
    """POST .../try answers what channel adt would send (MSH-5 HUB -> EMR), stores nothing, audits 'try'."""
    (message_id,) = yield store.add([pms_message(1)])
    web = start_web(message_actions=try_actions())
    before = yield store.get(message_id)

    answer = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/try", "POST", headers=basic())

    assert answer.status == 200, answer.body
    trial = answer.json()
    assert (trial["channel"], trial["outcome"], trial["control_id"]) == ("adt", "accepted", "CTRL1")
    (emr,) = trial["destinations"]
    assert emr["changes"] == [
        {"path": "MSH-5", "kind": "changed", "name": "Receiving Application", "old": "HUB", "new": "EMR"}
    ]
    after = yield store.get(message_id)
    assert (after.summary.status, after.deliveries) == (before.summary.status, before.deliveries)
    assert [row[1:3] for row in audit_rows(store)] == [("try", message_id)]


@pytest_twisted.inlineCallbacks
def test_try_on_another_channel_and_the_refusals(start_web, store):
    """?channel= tries another channel (not accepted: adt takes it); unknown channel 400, no message 404."""
    (message_id,) = yield store.add([pms_message(2)])
    web = start_web(message_actions=try_actions())
    url = f"{web.url}/api/messages/{message_id}/try"

    other = yield in_thread(fetch, url + "?channel=other", "POST", headers=basic())
    unknown = yield in_thread(fetch, url + "?channel=nosuch", "POST", headers=basic())
    missing = yield in_thread(fetch, f"{web.url}/api/messages/999/try", "POST", headers=basic())

    assert other.status == 200
    assert other.json()["outcome"] == "not accepted"
    assert "channel 'adt'" in other.json()["reason"]
    assert (unknown.status, unknown.json()["error"]) == (
        400,
        "no channel named 'nosuch' in the running configuration",
    )
    assert missing.status == 404


@pytest_twisted.inlineCallbacks
def test_try_of_a_pruned_message_is_gone(start_web, store):
    """A message whose content retention removed cannot be tried: 410."""
    (message_id,) = yield store.add([pms_message(3, status=Status.SENT)])
    yield in_thread(
        RetentionRepository(store.repository.engine).prune, RetentionPolicy(default_days=1), limit=10
    )
    web = start_web(message_actions=try_actions())

    answer = yield in_thread(fetch, f"{web.url}/api/messages/{message_id}/try", "POST", headers=basic())

    assert answer.status == 410


@pytest_twisted.inlineCallbacks
def test_try_needs_the_operator_role(start_web, store):
    """A viewer may not try a message (403, nothing audited); an operator may."""
    (message_id,) = yield store.add([pms_message(4)])
    web = start_web(users=ROLE_USERS, message_actions=try_actions())
    url = f"{web.url}/api/messages/{message_id}/try"

    viewer = yield in_thread(fetch, url, "POST", headers=basic("vera"))
    operator = yield in_thread(fetch, url, "POST", headers=basic("otto"))

    assert viewer.status == 403
    assert operator.status == 200
    assert [row[:2] for row in audit_rows(store)] == [("otto", "try")]
