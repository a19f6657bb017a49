"""engine/cli/channels.py: ``hl7engine channel pause|resume|list`` write and read the store's pauses."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from engine.cli import main as cli
from engine.store.controls import ControlRepository
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.dashboard import dashboard_config


def _config_file(tmp_path) -> str:
    dashboard_config(tmp_path, 2575)  # writes channels.yaml: channel adt, destination emr
    return str(tmp_path / "channels.yaml")


def _pauses(tmp_path) -> list[tuple]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    try:
        return [(p.channel, p.destination, p.paused_by) for p in ControlRepository(engine).pauses()]
    finally:
        engine.dispose()


def test_pause_and_resume_a_destination_and_a_channel(tmp_path):
    """pause writes the pause (by the OS user), a second pause says so, resume removes it."""
    config = _config_file(tmp_path)
    _pauses(tmp_path)  # the store exists, migrated
    run = CliRunner().invoke

    paused = run(cli, ["channel", "pause", "-c", config, "adt", "--destination", "emr"])
    assert paused.exit_code == 0, paused.output
    assert paused.output == "channel adt destination emr: paused\n"
    assert run(cli, ["channel", "pause", "-c", config, "adt", "-d", "emr"]).output.endswith(
        "was not running\n"
    )
    assert run(cli, ["channel", "pause", "-c", config, "adt"]).output == "channel adt: paused\n"
    [(channel, destination, by), whole] = sorted(_pauses(tmp_path), key=lambda p: p[1], reverse=True)
    assert (channel, destination) == ("adt", "emr") and by.startswith("cli:")
    assert whole[:2] == ("adt", "")

    listed = run(cli, ["channel", "list", "-c", config])
    assert listed.exit_code == 0, listed.output
    lines = [re.sub(r" +", " ", line).strip() for line in listed.output.splitlines()]
    assert lines == [
        "CHANNEL DESTINATION STATE RECEIVED SENT ERRORS QUEUED OLDEST",
        "adt - paused 0 0 0 0 -",
        "emr paused 0 0 0 -",
        "counts over the last 1h",
    ]

    assert run(cli, ["channel", "resume", "-c", config, "adt", "-d", "emr"]).output.endswith(": resumed\n")
    held = run(cli, ["channel", "list", "-c", config]).output.splitlines()[2]
    assert re.sub(r" +", " ", held).strip() == "emr paused (channel) 0 0 0 -"  # its channel still is
    assert run(cli, ["channel", "resume", "-c", config, "adt"]).exit_code == 0
    assert _pauses(tmp_path) == []
    document = json.loads(run(cli, ["channel", "list", "-c", config, "--json", "--window", "5m"]).output)
    assert document["window"] == "5m" and document["channels"][0]["destinations"][0]["paused"] is None


def test_unknown_names_are_refused_without_writing(tmp_path):
    """A channel or destination the config does not have exits 2 and pauses nothing."""
    config = _config_file(tmp_path)
    run = CliRunner().invoke
    unknown = run(cli, ["channel", "pause", "-c", config, "nope"])
    assert unknown.exit_code == 2 and "no channel 'nope'" in unknown.output
    wrong = run(cli, ["channel", "pause", "-c", config, "adt", "-d", "nope"])
    assert wrong.exit_code == 2 and "has no destination 'nope'" in wrong.output
    assert _pauses(tmp_path) == []


def test_list_reads_the_same_through_sqlalchemy_as_through_sqlite3(tmp_path):
    """A --db URL the stdlib does not read (a query) goes through the repositories: the same document."""
    config = _config_file(tmp_path)
    _pauses(tmp_path)
    run = CliRunner().invoke
    assert run(cli, ["channel", "pause", "-c", config, "adt", "-d", "emr"]).exit_code == 0
    path = tmp_path / "store.db"
    documents = []
    for url in (f"sqlite:///{path}", f"sqlite:///{path}?timeout=5"):
        listed = run(cli, ["channel", "list", "-c", config, "--db", url, "--json", "--window", "24h"])
        assert listed.exit_code == 0, listed.output
        document = json.loads(listed.output)
        documents.append({key: value for key, value in document.items() if key not in ("at", "since")})
    assert documents[0] == documents[1]
    assert documents[0]["channels"][0]["destinations"][0]["paused"]["paused_by"].startswith("cli:")
