"""engine/web/configs.py: the configuration as loaded, its history and diffs, for admins; no hash kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest_twisted
import sqlalchemy as sa

from engine.config import load_config
from engine.store.schema import config_history
from engine.web.passwords import hash_password
from tests.fakes.harness import in_thread, start_engine, wait_until
from tests.fakes.web import PASSWORD, basic, fetch

CONFIG = """\
engine:
  application: HUB
  facility: TEST
  data_dir: {data_dir}
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
    users:
      alice: {{password: "{admin}", role: admin}}
      vera:
        password: "{viewer}"
        role: viewer
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: adt
    source: main
    accept:
      types: [{types}]
"""


def _texts(store) -> list[str]:
    with store.repository.engine.connect() as connection:
        return (
            connection.execute(sa.select(config_history.c.content).order_by(config_history.c.id))
            .scalars()
            .all()
        )


@pytest_twisted.inlineCallbacks
def test_the_config_view_history_and_diff_of_a_running_engine(tmp_path):
    """An admin sees the channels as loaded and each applied text; the table never holds a password hash."""
    admin, viewer = hash_password(PASSWORD, iterations=1000), hash_password("viewer pass", iterations=1000)
    path = tmp_path / "channels.yaml"

    def write(types: str) -> None:
        text = CONFIG.format(data_dir=tmp_path / "data", admin=admin, viewer=viewer, types=types)
        path.write_text(text, encoding="utf-8")

    write("ADT")
    engine = start_engine(load_config(path))
    try:
        yield wait_until(engine.store.config_history)
        write("ADT, ORU")
        yield engine.reload_from_file(path)
        yield wait_until(lambda: engine.store.config_history().addCallback(lambda found: len(found) == 2))
        texts = _texts(engine.store)
        url = f"http://127.0.0.1:{engine.web.port}"
        current = yield in_thread(fetch, f"{url}/api/config", headers=basic())
        history = yield in_thread(fetch, f"{url}/api/config/history", headers=basic())
        older, newer = (record["id"] for record in reversed(history.json()))
        one = yield in_thread(fetch, f"{url}/api/config/history/{older}", headers=basic())
        diff = yield in_thread(fetch, f"{url}/api/config/diff?from={older}&to={newer}", headers=basic())
        refused = yield in_thread(fetch, f"{url}/api/config", headers=basic("vera", "viewer pass"))
    finally:
        yield engine.stopService()
    assert len(texts) == 2
    for text in texts:
        for secret in (admin, viewer):
            assert secret.rsplit("$", 1)[1] not in text and secret.split("$")[2] not in text
        assert text.count("pbkdf2_sha256$<redacted>") == 2 and "role: viewer" in text
    summary, applied = current.json()["summary"], current.json()["applied"]
    assert summary["channels"] == [
        {
            "name": "adt",
            "description": "",
            "enabled": True,
            "source": "main",
            "filters": 0,
            "transforms": 0,
            "destinations": [],
        }
    ]
    assert summary["users"] == [{"name": "alice", "role": "admin"}, {"name": "vera", "role": "viewer"}]
    assert summary["listeners"] == [{"name": "main", "type": "mllp", "where": "tcp:0:interface=127.0.0.1"}]
    assert (applied["id"], applied["content"]) == (newer, texts[1])
    assert [set(record) for record in history.json()] == [
        {"id", "applied_at", "source", "sha256", "changes", "inputs"}
    ] * 2
    assert one.json()["content"] == texts[0]
    assert "-      types: [ADT]\n+      types: [ADT, ORU]\n" in diff.json()["diff"]
    assert diff.json()["diff"].startswith(f"--- {older} ")
    assert refused.status == 403


@pytest_twisted.inlineCallbacks
def test_history_pages_and_bad_requests(start_web, store):
    """History pages with limit and before_id; unknown ids are 404; bad or missing parameters are 400."""
    ids = []
    for n in range(3):
        ids.append(
            (
                yield store.record_config(
                    applied_at=datetime(2026, 1, 1, n, tzinfo=UTC),
                    source="channels.yaml",
                    content=f"version: {n}\n",
                    sha256=f"{n:064x}",
                    changes="",
                )
            )
        )
    web = start_web()

    def get(path: str):
        return in_thread(fetch, f"{web.url}/api/config{path}", headers=basic())

    page = yield get(f"/history?limit=2&before_id={ids[2]}")
    assert [record["id"] for record in page.json()] == [ids[1], ids[0]]
    same = yield get(f"/diff?from={ids[0]}&to={ids[0]}")
    assert same.json() == {"from": ids[0], "to": ids[0], "diff": ""}
    for path, code in (
        ("/history/999", 404),
        (f"/diff?from={ids[0]}&to=999", 404),
        ("/history?limit=501", 400),
        ("/history?limit=0", 400),
        ("/history?colour=red", 400),
        (f"/diff?from={ids[0]}", 400),
        (f"/diff?from=x&to={ids[1]}", 400),
        ("?x=1", 400),
        ("/elsewhere", 404),
    ):
        response = yield get(path)
        assert (response.status, "error" in response.json()) == (code, True), path
