"""engine/web/nodes.py: GET /api/nodes shows every node, its state and leases, and the work nobody holds."""

from __future__ import annotations

from datetime import timedelta

import pytest_twisted

from tests.fakes.cluster import two_alive_one_dead
from tests.fakes.harness import in_thread
from tests.fakes.store import NOW
from tests.fakes.web import BROWSER, basic, fetch, login, session_cookie


@pytest_twisted.inlineCallbacks
def test_the_nodes_need_a_login_like_every_api(start_web, store):
    """Without credentials /api/nodes is 401; Basic credentials and a console session both see it."""
    web = start_web()
    url = f"{web.url}/api/nodes"
    anonymous = yield in_thread(fetch, url)
    wrong = yield in_thread(fetch, url, headers=basic(password="guess"))
    by_script = yield in_thread(fetch, url, headers=basic())
    cookie = session_cookie((yield login(web)))
    by_browser = yield in_thread(fetch, url, headers={**cookie, **BROWSER})

    assert (anonymous.status, wrong.status) == (401, 401)
    assert "nodes" not in anonymous.json()
    assert (by_script.status, by_browser.status) == (200, 200)
    assert by_script.json()["nodes"] == by_browser.json()["nodes"] == []
    assert by_script.header("cache-control") == "no-store"


@pytest_twisted.inlineCallbacks
def test_the_nodes_their_state_their_leases_and_unheld_work_as_json(start_web, open_sqlite_store):
    """Two alive nodes with their leases, a dead one still naming its expired lease, the free work listed."""
    store = open_sqlite_store(clock=lambda: NOW)
    ids = two_alive_one_dead(store.repository.engine, NOW)
    web = start_web(on=store)

    response = yield in_thread(fetch, f"{web.url}/api/nodes", headers=basic())

    assert response.status == 200
    shown = response.json()
    assert set(shown) == {"at", "lease_seconds", "nodes", "unheld"}
    assert (shown["at"], shown["lease_seconds"]) == (NOW.isoformat(), 10.0)
    assert [(n["name"], n["state"], n["heartbeat_age"]) for n in shown["nodes"]] == [
        ("node-a", "alive", 2.0),
        ("node-b", "alive", 4.0),
        ("node-c", "dead", 40.0),
    ]
    assert shown["nodes"][1] == {
        "id": ids["node-b"],
        "name": "node-b",
        "host": "host-b",
        "pid": 102,
        "roles": ["delivery"],
        "wake_address": "127.0.0.1:7000",
        "started_at": (NOW - timedelta(hours=1, seconds=4)).isoformat(),
        "heartbeat_at": (NOW - timedelta(seconds=4)).isoformat(),
        "stopped_at": None,
        "state": "alive",
        "heartbeat_age": 4.0,
        "leases": [
            {
                "key": "queue:lab/lis",
                "token": 2,
                "acquired_at": (NOW + timedelta(seconds=6) - timedelta(minutes=5)).isoformat(),
                "expires_at": (NOW + timedelta(seconds=6)).isoformat(),
                "expired": False,
            }
        ],
    }
    assert [lease["key"] for lease in shown["nodes"][0]["leases"]] == ["channel:adt", "queue:adt/emr"]
    assert [(lease["key"], lease["expired"]) for lease in shown["nodes"][2]["leases"]] == [
        ("channel:lab", True)
    ]
    assert shown["unheld"] == ["channel:lab", "job:retention"]


@pytest_twisted.inlineCallbacks
def test_parameters_and_paths_below_the_nodes_are_refused(start_web):
    """/api/nodes takes no parameters (400) and has nothing below it (404); only GET is served (405)."""
    web = start_web()
    asked = yield in_thread(fetch, f"{web.url}/api/nodes?state=dead", headers=basic())
    below = yield in_thread(fetch, f"{web.url}/api/nodes/1", headers=basic())
    posted = yield in_thread(fetch, f"{web.url}/api/nodes", "POST", headers={**basic(), **BROWSER})

    assert (asked.status, asked.json()) == (400, {"error": "/api/nodes takes no parameters"})
    assert (below.status, below.json()) == (404, {"error": "no such resource"})
    assert posted.status == 405 and set(posted.header("allow").split(", ")) == {"GET", "HEAD"}
