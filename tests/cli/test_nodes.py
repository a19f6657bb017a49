"""engine/cli/nodes.py: ``hl7engine nodes`` prints the nodes on the store, their state and leases."""

from __future__ import annotations

import json
import re
import textwrap

from click.testing import CliRunner

from engine.cli import main as cli
from engine.model import utc_now
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.cluster import two_alive_one_dead
from tests.fakes.harness import BASIC_CONFIG


def _migrated(url: str):
    engine = create_engine_for(url)
    upgrade(engine)
    return engine


def test_nodes_prints_a_table_of_the_nodes_and_the_unheld_work(sqlite_url):
    """One line per node (alive, alive, dead), what each holds, then the work no node holds."""
    engine = _migrated(sqlite_url)
    two_alive_one_dead(engine, utc_now())
    engine.dispose()

    result = CliRunner().invoke(cli, ["nodes", "--db", sqlite_url, "-c", "no-such-config.yaml"])

    assert result.exit_code == 0, result.output
    lines = [re.sub(r"\d+ s ago", "N s ago", re.sub(r" +", " ", line)) for line in result.output.splitlines()]
    assert lines == [
        "NODE STATE HEARTBEAT ROLES HOST PID HOLDS",
        "node-a alive N s ago intake,processing,delivery,jobs host-a 101 channel:adt, queue:adt/emr",
        "node-b alive N s ago delivery host-b 102 queue:lab/lis",
        "node-c dead N s ago intake,processing,delivery,jobs host-c 103 channel:lab (expired)",
        "held by no node: channel:lab, job:retention",
    ]
    raw = result.output.splitlines()  # the columns line up
    assert raw[0].index("HOLDS") == raw[1].index("channel:adt") == raw[3].index("channel:lab")
    assert raw[0].index("STATE") == raw[1].index("alive") == raw[3].index("dead")


def test_nodes_json_is_the_whole_view_for_scripts(sqlite_url):
    """--json prints one object: the moment, the lease, every node with its leases, the unheld keys."""
    engine = _migrated(sqlite_url)
    ids = two_alive_one_dead(engine, utc_now())
    engine.dispose()

    result = CliRunner().invoke(cli, ["nodes", "--json", "--db", sqlite_url, "-c", "no-such-config.yaml"])

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["lease_seconds"] == 10.0
    assert [(n["id"], n["name"], n["state"]) for n in shown["nodes"]] == [
        (ids["node-a"], "node-a", "alive"),
        (ids["node-b"], "node-b", "alive"),
        (ids["node-c"], "node-c", "dead"),
    ]
    assert 40 <= shown["nodes"][2]["heartbeat_age"] < 100
    assert [lease["key"] for lease in shown["nodes"][0]["leases"]] == ["channel:adt", "queue:adt/emr"]
    assert shown["unheld"] == ["channel:lab", "job:retention"]


def test_the_lease_of_the_config_decides_who_is_dead(tmp_path, postgres_url):
    """With engine.cluster.lease_seconds 60 the node silent for 40 s is alive, read through the config."""
    engine = _migrated(postgres_url)
    two_alive_one_dead(engine, utc_now())
    engine.dispose()
    config = tmp_path / "channels.yaml"
    basic = textwrap.dedent(BASIC_CONFIG).format(
        data_dir=tmp_path / "data",
        store_url=postgres_url,
        lock_timeout=5,
        max_frame_bytes=65536,
        honour="false",
    )
    config.write_text(
        basic.replace("listeners:", "  cluster: {node: here, lease_seconds: 60}\nlisteners:", 1)
    )

    result = CliRunner().invoke(cli, ["nodes", "--json", "-c", str(config)])

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["lease_seconds"] == 60.0
    assert [n["state"] for n in shown["nodes"]] == ["alive", "alive", "alive"]


def test_no_nodes_and_a_store_without_the_tables(tmp_path, sqlite_url):
    """An empty store says no node registered (exit 0); a missing database is not created (exit 1)."""
    _migrated(sqlite_url).dispose()
    empty = CliRunner().invoke(cli, ["nodes", "--db", sqlite_url, "-c", "no-such-config.yaml"])
    bare = tmp_path / "bare.db"
    failed = CliRunner().invoke(cli, ["nodes", "--db", f"sqlite:///{bare}", "-c", "no-such-config.yaml"])

    assert (empty.exit_code, empty.output) == (
        0,
        "no node has registered: the engine runs alone on this store (or not at all)\n",
    )
    assert (failed.exit_code, failed.output) == (
        1,
        f"hl7engine: no store at {bare}: the engine creates it when it first runs (see -c and --db)\n",
    )
    assert not bare.exists()
