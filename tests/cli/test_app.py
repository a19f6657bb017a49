"""engine/cli/app.py: commands imported on use, and progress shown without a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from engine.cli.app import progress
from engine.record.ingest import RecordIngestor
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from tests.fakes.harness import free_port
from tests.fakes.messages import lab_message
from tests.fakes.process import ENGINE, write_config
from tests.fakes.record import PID, Feeder, hl7

_IMPORTED = """
import sys
from engine.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted({name.split(".")[0] for name in sys.modules} & {"twisted", "sqlalchemy", "hl7apy"})
    print("imported:" + ",".join(heavy), file=sys.stderr)
    # What a command on a clear SQLite store, without TLS, has no use for (each costs 10-25 ms to import).
    deferred = ("cryptography", "sqlalchemy.dialects.postgresql")
    print("deferred:" + ",".join(name for name in deferred if name in sys.modules), file=sys.stderr)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    """The command run in a new interpreter, which says on stderr what it imported; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def _imports(*args: str) -> tuple[str, str]:
    """Run the command; ("imported:" its heavy packages, "deferred:" the modules it should not need)."""
    imported, deferred = _run(*args).stderr.strip().splitlines()[-2:]
    return imported, deferred


def _imported(*args: str) -> str:
    return _imports(*args)[0]


def _store_config(tmp_path):
    """A config whose engine block has engine.http, and a migrated SQLite store beside it."""
    config = write_config(tmp_path, free_port())
    config.write_text(
        config.read_text().replace(
            "engine:\n", 'engine:\n  http:\n    endpoint: "tcp:0:interface=127.0.0.1"\n', 1
        )
    )
    (tmp_path / "data").mkdir()
    upgrade(create_engine_for(f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}"))
    return config


def test_help_and_store_commands_do_not_import_twisted(tmp_path):
    """`--help` imports neither Twisted nor SQLAlchemy; nor does `messages list` (with engine.http)."""
    assert _imported("--help") == "imported:"
    config = _store_config(tmp_path)
    assert _imported("messages", "list", "-c", str(config)) == "imported:"


def test_read_only_commands_on_a_sqlite_store_read_it_without_sqlalchemy(tmp_path):
    """`messages list`/`show`, `nodes`, `patient worklist`/`find`/`show` read SQLite with the stdlib."""
    config = _store_config(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}")
    MessageRepository(engine).insert([lab_message(1)])
    Feeder(engine, RecordIngestor(engine))(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    engine.dispose()
    for command in (
        ["messages", "list"],
        ["messages", "show", "1"],
        ["nodes"],
        ["patient", "worklist"],
        ["patient", "find", "--name", "doe"],
        ["patient", "show", "1"],
        ["patient", "show", "1", "--fhir"],
    ):
        assert _imports(*command, "-c", str(config)) == ("imported:", "deferred:"), command
    [found] = _run("patient", "find", "--identifier", "P-1", "-c", str(config)).stdout.splitlines()
    assert json.loads(found)["names"][0]["family"] == "DOE"


def test_a_postgresql_store_is_read_through_sqlalchemy(tmp_path, postgres_url):
    """On PostgreSQL `messages list`, `show` and `patient show` read through SQLAlchemy what is stored."""
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    [stored] = MessageRepository(engine).insert([lab_message(1)])
    engine.dispose()
    listed = _run("messages", "list", "--db", postgres_url, "--json", "-c", str(tmp_path / "none.yaml"))
    assert [json.loads(line)["control_id"] for line in listed.stdout.splitlines()] == ["C1"]
    assert listed.stderr.splitlines()[-2] == "imported:sqlalchemy"
    shown = _run("messages", "show", str(stored), "--db", postgres_url, "--json", "-c", str(tmp_path / "x"))
    assert json.loads(shown.stdout)["raw"].startswith("MSH|^~\\&|LAB|NORTH|")
    engine = create_engine_for(postgres_url)
    fed = Feeder(engine, RecordIngestor(engine))(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    engine.dispose()
    person = _run("patient", "show", str(fed[1].patient_id), "--db", postgres_url, "-c", str(tmp_path / "x"))
    assert json.loads(person.stdout)["names"][0]["given"] == "JANE"
    assert person.stderr.splitlines()[-2] == "imported:sqlalchemy"


def test_progress_without_a_terminal_prints_a_line_per_interval(capsys):
    """Without a terminal each interval prints "label: done/total" on stderr, the last count at the end."""
    with progress(range(3), 3, "sending", every_seconds=0) as items:
        assert list(items) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines() == ["sending: 1/3", "sending: 2/3", "sending: 3/3"]
    with progress(range(3), 3, "sending", every_seconds=3600) as items:
        list(items)
    assert capsys.readouterr().err == ""  # a quick run says nothing


_CHANNEL_LIST = """
import sys
from engine.cli import main
main(sys.argv[1:], standalone_mode=False)
unwanted = ("twisted", "hl7apy", "lxml", "sqlalchemy", "engine.config", "engine.channels.spec")
unwanted += ("engine.transforms",)
print("imported:" + ",".join(name for name in unwanted if name in sys.modules), file=sys.stderr)
"""


def test_channel_list_reads_only_what_it_shows(tmp_path):
    """`channel list` builds no channel (python: module, full loader, lxml, hl7apy), imports no SQLAlchemy."""
    config = _store_config(tmp_path)
    # A module that does not exist: the full loader would report it, `channel list` never imports it.
    config.write_text(
        config.read_text()
        + "    transforms:\n      - python: not_a_module_anywhere:run\n"
        + "    destinations:\n      - {name: archive, type: file, directory: out, queue: {on_error: skip}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", _CHANNEL_LIST, "channel", "list", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "imported:"
    [channel] = json.loads(result.stdout)["channels"]
    assert channel["name"] == "everything" and channel["source"] == "main"
    assert [(d["name"], d["type"], d["on_error"]) for d in channel["destinations"]] == [
        ("archive", "file", "skip")
    ]


#: Commands without --json, and why: they print no data a script would read, only a line of outcome
#: (or what the command is for: a hash, a key, converted messages in the format --to names).
NO_JSON = {
    "backup": "one line: the size copied and the integrity check",
    "channel pause": "one line: what was paused",
    "channel resume": "one line: what was resumed",
    "convert": "prints the messages converted, in the format --to names (fhir: JSON)",
    "demo": "runs until Ctrl-C",
    "hash-password": "prints the hash",
    "healthcheck": "its exit status is the answer",
    "new-key": "prints the key",
    "patient link": "one line: the merge made",
    "patient merge": "one line: the merge made",
    "patient resolve": "one line: the conflict resolved",
    "patient unlink": "one line: the link undone",
    "patient unmerge": "one line: the merge undone",
    "rekey": "progress and counts of rows sealed again",
    "reload": "one line: the engine signalled",
    "run": "runs until stopped; logs on stderr",
}


def _commands():
    """(name, command) of every leaf command, aliases once (under their first name)."""
    import click

    from engine.cli import main

    context, seen = click.Context(main), set()

    def walk(group, prefix):
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if isinstance(command, click.Group):
                yield from walk(command, (*prefix, name))
            elif id(command) not in seen:
                seen.add(id(command))
                yield " ".join((*prefix, name)), command

    return list(walk(main, ()))


def test_every_command_that_prints_data_takes_json_and_the_cli_page_says_what_it_prints():
    """Every command but those of NO_JSON takes --json, and docs/cli.md's `--json` table has its row."""
    with_json = {name for name, command in _commands() if any("--json" in p.opts for p in command.params)}
    assert {name for name, _ in _commands()} - with_json == set(NO_JSON)
    page = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page.split("## `--json`", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `([a-z -]+)` \|", table, re.MULTILINE)) == with_json


def test_json_output_has_its_keys_sorted_as_cli_md_says():
    """`validate --json` and `try --json` print their objects with sorted keys, like every --json."""
    root = Path(__file__).resolve().parents[2]
    sample = str(root / "samples" / "pms" / "01_adt_a04_register.hl7")
    unsorted: list[list[str]] = []

    def keep(pairs):
        keys = [key for key, _ in pairs]
        if keys != sorted(keys):
            unsorted.append(keys)
        return dict(pairs)

    config = str(root / "channels.yaml")
    for command in (["validate", "--json", sample], ["try", "-c", config, "--json", "pms-adt", sample]):
        result = subprocess.run([*ENGINE, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        documents = result.stdout.splitlines() if command[0] == "validate" else [result.stdout]
        for document in documents:
            json.loads(document, object_pairs_hook=keep)
    assert unsorted == []


def test_backup_reads_only_the_engine_block(tmp_path):
    """`backup` copies the store without building a channel (a missing `python:` module is no matter)."""
    config = _store_config(tmp_path)
    config.write_text(config.read_text() + "    transforms:\n      - python: not_a_module_anywhere:run\n")
    copy = tmp_path / "copy.db"
    result = subprocess.run(
        [sys.executable, "-c", _CHANNEL_LIST, "backup", str(copy), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout and copy.is_file()
    imported = result.stderr.splitlines()[-1].removeprefix("imported:").split(",")
    assert "engine.config" not in imported and "twisted" not in imported
