"""engine/configstore.py: the light views of a channels.yaml agree with the full loader on what they read."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.channels.overview import Overview, channels_json
from engine.channels.spec import AnyDestination
from engine.config import load_config
from engine.configstore import DESTINATION_TYPES, load_channel_views, load_store_side
from engine.errors import ConfigError
from engine.store.reads import DashboardCounts, QueueState

BUNDLED = Path(__file__).resolve().parents[1] / "channels.yaml"


def _counts() -> DashboardCounts:
    at = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    return DashboardCounts(
        since=at,
        at=at,
        listeners={},
        last_received={},
        channels={"pms-adt": {"SENT": 3, "ERROR": 1}},
        channels_queued={"pms-adt": 2},
        queues={("pms-adt", "emr"): QueueState(depth=2, oldest_queued_at=at, settled={"SENT": 3})},
    )


def test_views_of_the_bundled_config_give_the_same_document_as_the_full_config(tmp_path):
    """`channel list --json` from the views equals GET /api/channels from the full config."""
    environ = {"HL7ENGINE_DATA": str(tmp_path)}
    config = load_config(BUNDLED, environ=environ)
    side, views = load_channel_views(BUNDLED, environ=environ)
    full = channels_json(Overview(tuple(c for c in config.channels if c.enabled), ()), _counts(), {}, "1h")
    light = channels_json(Overview(tuple(c for c in views if c.enabled), ()), _counts(), {}, "1h")
    assert light == full
    assert {d["type"] for c in light["channels"] for d in c["destinations"]} >= {"mllp", "file", "record"}
    assert side.channels == load_store_side(BUNDLED, environ=environ).channels


def test_destination_types_are_the_full_loaders():
    """The views tag destinations by the same types as engine.channels.spec."""
    members = typing.get_args(typing.get_args(AnyDestination)[0])
    assert DESTINATION_TYPES == tuple(typing.get_args(m.model_fields["type"].annotation)[0] for m in members)


_BAD = """
engine:
  data_dir: data
listeners:
  - name: main
    endpoint: "tcp:2575:interface=127.0.0.1"
channels:
  - name: adt
    source: main
    enabled: maybe
    accept: {types: [ADT]}
    destinations:
      - {name: emr, type: mllp, host: localhost, port: 2576, queue: {on_error: retry, retry_jitter: 2}}
      - {name: bad name, type: carrier-pigeon}
      - {type: file, directory: out}
  - accept: {types: [ORU]}
"""


def test_problems_in_what_it_reads_are_reported_as_check_reports_them(tmp_path):
    """Each problem of the views is one of the full loader's, with the same path, line and words."""
    path = tmp_path / "channels.yaml"
    path.write_text(_BAD)
    with pytest.raises(ConfigError) as full:
        load_config(path)
    with pytest.raises(ConfigError) as light:
        load_channel_views(path)
    found = [str(problem) for problem in light.value.problems]
    assert {
        "channels[0].enabled",
        "channels[0].destinations[0].queue.on_error",
        "channels[0].destinations[0].queue.retry_jitter",
        "channels[0].destinations[1].type",
        "channels[0].destinations[2].name",
        "channels[1].name",
        "channels[1].source",
    } == {problem.path for problem in light.value.problems}
    assert set(found) <= {str(problem) for problem in full.value.problems}
    # The store commands read only the engine block: the channels' problems are not theirs.
    assert load_store_side(path).channels == {"adt": ("emr", "bad name")}
