"""engine.store.configs: the history of applied configurations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import pytest_twisted

from engine.store.configs import ConfigRecord
from tests.fakes.messages import T0


def test_config_history_is_newest_first(configs):
    """record_config() returns increasing ids; config_history() lists them newest first, at most limit."""
    ids = [
        configs.record_config(
            applied_at=T0 + timedelta(minutes=n),
            source="/etc/hl7engine/channels.yaml",
            content=f"v{n}\n",
            sha256=f"{n}" * 64,
            changes=f"change {n}",
            inputs=[{"kind": "table", "name": "payers", "path": "/etc/payers.csv", "sha256": f"{n}" * 64}],
        )
        for n in range(3)
    ]
    assert ids == sorted(ids)
    history = configs.config_history()
    assert history[0] == ConfigRecord(
        ids[2],
        T0 + timedelta(minutes=2),
        "/etc/hl7engine/channels.yaml",
        "2" * 64,
        "v2\n",
        "change 2",
        [{"kind": "table", "name": "payers", "path": "/etc/payers.csv", "sha256": "2" * 64}],
    )
    assert [r.id for r in history] == ids[::-1]
    assert [r.id for r in configs.config_history(limit=1)] == [ids[2]]


def test_config_content_keeps_text_exactly(configs):
    """Content and changes come back as given, non-ASCII and line breaks included."""
    content = 'channels:\n  - name: labo-résultats\n    description: "ü"\r\n'
    configs.record_config(
        applied_at=T0,
        source="channels.yaml",
        content=content,
        sha256="a" * 64,
        changes="added channel labo-résultats\nremoved x",
    )
    [record] = configs.config_history()
    assert (record.content, record.changes) == (content, "added channel labo-résultats\nremoved x")


@pytest.mark.parametrize(
    ("call", "arguments"),
    [
        (
            "record_config",
            {"applied_at": datetime(2024, 3, 1), "source": "", "content": "", "sha256": "", "changes": ""},
        ),
        ("config_history", {"limit": 0}),
    ],
)
def test_bad_arguments_are_refused(configs, call, arguments):
    """A naive applied_at or a limit below 1 is a ValueError."""
    with pytest.raises(ValueError):
        getattr(configs, call)(**arguments)


@pytest_twisted.inlineCallbacks
def test_store_records_and_lists_configs(open_store):
    """record_config() goes through the writer and config_history() through the read pool."""
    store = open_store()
    record_id = yield store.record_config(
        applied_at=T0, source="channels.yaml", content="x", sha256="b" * 64, changes="first config"
    )
    [record] = yield store.config_history(limit=5)
    assert (record.id, record.changes) == (record_id, "first config")
