"""engine/cli/app.py and its commands: a user's mistake is one line on stderr and an exit status.

Each case runs ``python -m engine ...`` in a process of its own, as a user would: 2 for a usage
error, 1 for what is not found or failed, never a traceback (unless ``--debug``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from tests.fakes.corpus import CORPUS_DIR
from tests.fakes.harness import free_port
from tests.fakes.messages import new_message
from tests.fakes.process import ENGINE, launch, stop, write_config

LATIN1 = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|L1|P|2.5.1|||||| 8859/1\r"
    "PID|1||4711^^^PMS^MR||MÜLLER^RENÉ||19800101|M\r"
).encode("latin-1")


def hl7engine(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``hl7engine args`` in a process of its own; its output as text."""
    return subprocess.run([*ENGINE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def refused(result: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """Assert ``status``, no traceback and ``words`` in the last line of stderr; return that line."""
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
    return last


@pytest.fixture
def stored(tmp_path) -> Path:
    """A config in tmp_path (channel ``everything``) whose store holds two messages (ids 1 and 2)."""
    config = write_config(tmp_path, free_port())
    (tmp_path / "data").mkdir()
    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}")
    upgrade(engine)
    MessageRepository(engine).insert(
        [
            new_message(LATIN1, channel="everything", charset="8859/1"),
            new_message(LATIN1, channel="everything"),
        ]
    )
    engine.dispose()
    return config


def test_send_to_a_closed_port_is_one_line_and_exit_1(tmp_path):
    """`send` to a port nobody listens on: "cannot connect" in one line, exit 1."""
    sample = tmp_path / "a.hl7"
    sample.write_bytes(LATIN1)
    refused(hl7engine("send", f"127.0.0.1:{free_port()}", str(sample)), 1, "cannot connect to 127.0.0.1:")


def test_send_of_a_missing_file_is_a_usage_error(tmp_path):
    """`send` of a file that does not exist: exit 2 naming the file, before connecting anywhere."""
    refused(hl7engine("send", "127.0.0.1:9", str(tmp_path / "nope.hl7")), 2, "nope.hl7", "does not exist")


def test_send_of_files_holding_no_message_is_one_line_and_exit_1(tmp_path):
    """`send` of an empty file or folder: "no HL7 message" in one line, exit 1, before connecting anywhere."""
    (tmp_path / "empty.hl7").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    for source in ("empty.hl7", "folder"):
        refused(hl7engine("send", "127.0.0.1:9", source, cwd=tmp_path), 1, "no HL7 message in", source)


def test_send_to_a_port_out_of_range_is_a_usage_error(tmp_path):
    """ADDRESS with port 0 or past 65535: a usage error naming the range, not a failed connection."""
    sample = tmp_path / "a.hl7"
    sample.write_bytes(LATIN1)
    for address in ("127.0.0.1:0", "127.0.0.1:99999"):
        refused(hl7engine("send", address, str(sample)), 2, "1-65535")


def test_numbers_out_of_range_are_usage_errors_not_tracebacks(stored, tmp_path):
    """send --timeout 0 or -1 and rekey --batch 0 are usage errors naming the range accepted."""
    sample = tmp_path / "a.hl7"
    sample.write_bytes(LATIN1)
    for timeout in ("0", "-1"):
        refused(hl7engine("send", "--timeout", timeout, "127.0.0.1:9", str(sample)), 2, "--timeout", "x>0")
    refused(hl7engine("rekey", "--batch", "0", "-c", str(stored)), 2, "--batch", "x>=1")
    refused(hl7engine("rekey", "--pause", "-1", "-c", str(stored)), 2, "--pause", "x>=0")


def test_ids_and_limits_past_the_stores_integers_are_usage_errors(stored):
    """An id, --before-id or --limit past 2**63-1 (what the store's integers hold): exit 2, no traceback."""
    huge = str(2**63)
    for command in (
        ["messages", "show", huge],
        ["messages", "list", "--before-id", huge],
        ["messages", "list", "--limit", huge],
        ["resend", huge],
        ["reprocess", huge],
        ["patient", "show", huge],
        ["patient", "find", "--name", "x", "--limit", huge],
        ["patient", "unmerge", huge],
        ["patient", "link", "1", huge, "--reason", "r"],
    ):
        refused(hl7engine(*command, "-c", str(stored)), 2, "9223372036854775807")


def test_patient_find_refuses_a_birthdate_that_is_no_date(stored):
    """--birthdate 2020-13-01 (no 13th month) is a usage error, not an empty search that exits 0."""
    for value in ("2020-13-01", "2020-02-30", "yesterday", "19800101"):
        refused(hl7engine("patient", "find", "--birthdate", value, "-c", str(stored)), 2, value)
    assert hl7engine("patient", "find", "--birthdate", "1980-01-01", "-c", str(stored)).returncode == 0


def test_prune_of_an_unknown_channel_is_a_usage_error_naming_the_channels(stored):
    """prune --channel nosuch: exit 2 naming the channels, not a prune of nothing that says it is done."""
    refused(hl7engine("prune", "--channel", "nosuch", "--days", "3", "-c", str(stored)), 2, "everything")


def test_messages_list_refuses_bad_times_and_limits_and_says_what_is_accepted(stored):
    """--since yesterday and --limit 0 are usage errors naming what is accepted; an age like 2d works."""
    line = refused(hl7engine("messages", "list", "-c", str(stored), "--since", "yesterday"), 2, "yesterday")
    assert "ISO 8601" in line and "2d" in line
    refused(hl7engine("messages", "list", "-c", str(stored), "--limit", "0"), 2, "--limit")
    listed = hl7engine("messages", "list", "-c", str(stored), "--since", "3650d", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [2, 1]


def test_unknown_status_and_channel_are_usage_errors_naming_the_valid_values(stored):
    """--status bogus and --channel nosuch exit 2, the message naming the statuses and the channels."""
    line = refused(hl7engine("messages", "list", "-c", str(stored), "--status", "bogus"), 2, "bogus")
    assert "received" in line.lower() and "error" in line.lower()
    refused(
        hl7engine("messages", "list", "-c", str(stored), "--channel", "nosuch"), 2, "nosuch", "everything"
    )
    refused(hl7engine("resend", "-c", str(stored), "--channel", "nosuch"), 2, "nosuch", "everything")
    refused(hl7engine("resend", "1", "-c", str(stored), "--destination", "nowhere"), 2, "nowhere")


def test_resend_and_reprocess_of_unknown_ids_exit_1_and_change_nothing(stored):
    """`resend 42` and `reprocess 1 42` name the missing id and exit 1; message 1 is left as it was."""
    refused(hl7engine("resend", "42", "-c", str(stored)), 1, "no message 42")
    refused(hl7engine("reprocess", "1", "42", "-c", str(stored)), 1, "no message 42")
    shown = json.loads(hl7engine("messages", "show", "1", "-c", str(stored), "--json").stdout)
    assert (shown["status"], shown["events"]) == ("RECEIVED", [])
    refused(hl7engine("messages", "show", "42", "-c", str(stored)), 1, "no message 42")


def test_a_missing_or_empty_database_is_one_line_and_never_created(tmp_path):
    """--db of a missing SQLite file exits 1 without creating it; an empty file is not a store (exit 1)."""
    missing = tmp_path / "nowhere" / "x.db"
    refused(hl7engine("messages", "list", "--db", f"sqlite:///{missing}"), 1, "no store at", str(missing))
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    create_engine_for(f"sqlite:///{empty}").connect().close()
    refused(hl7engine("resend", "42", "--db", f"sqlite:///{empty}"), 1, "not an hl7engine store")


def test_a_db_that_is_a_path_not_a_url_is_one_line_naming_the_url_forms(stored):
    """--db given a file path, not a URL: one line saying which URLs it takes, exit 1, on every reader."""
    path = str(stored.parent / "data" / "hl7engine.db")
    for command in (["messages", "list"], ["messages", "show", "1"], ["resend", "1"], ["nodes"]):
        refused(hl7engine(*command, "--db", path, "-c", str(stored)), 1, "not a store URL", "sqlite:///")


def test_an_engine_error_is_one_line_unless_debug(tmp_path):
    """A file that is not a database: one line "hl7engine: ..." and exit 1; with --debug, the traceback."""
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not a database\n" * 200)
    url = f"sqlite:///{bogus}"
    assert refused(hl7engine("messages", "list", "--db", url), 1).startswith("hl7engine: ")
    debug = hl7engine("--debug", "messages", "list", "--db", url)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_check_takes_the_file_as_an_argument_and_h_is_help(tmp_path):
    """`check FILE` like `check -c FILE`, with --json; `-h` prints help, on the group and a command."""
    config = write_config(tmp_path, free_port())
    assert "OK (1 listener(s), 1 channel(s))" in hl7engine("check", str(config)).stdout
    checked = json.loads(hl7engine("check", "--json", str(config)).stdout)
    assert (checked["ok"], checked["channels"], checked["problems"]) == (True, 1, [])
    broken = tmp_path / "broken.yaml"
    broken.write_text("listeners: []\nchannels: []\ncolour: red\n")
    result = hl7engine("check", "--json", str(broken))
    assert result.returncode == 2 and json.loads(result.stdout)["problems"][0]["path"] == "colour"
    for args in (["-h"], ["messages", "-h"], ["send", "-h"]):
        shown = hl7engine(*args)
        assert shown.returncode == 0 and shown.stdout.startswith("Usage:"), shown.stderr


def test_messages_show_decodes_per_msh18_and_shows_fields_by_name(stored):
    """`messages show` decodes ISO 8859-1 as MSH-18 says; --table names each field of the version."""
    shown = hl7engine("messages", "show", "1", "-c", str(stored))
    assert shown.returncode == 0, shown.stderr
    assert "MÜLLER^RENÉ" in shown.stdout
    table = hl7engine("messages", "show", "1", "-c", str(stored), "--table").stdout.splitlines()
    assert [line.split() for line in table if line.startswith("PID-5 ")] == [
        ["PID-5", "Patient", "Name", "MÜLLER^RENÉ"]
    ]
    as_json = json.loads(hl7engine("messages", "show", "1", "-c", str(stored), "--json", "--table").stdout)
    assert {"field": "PID-8", "name": "Administrative Sex", "value": "M"} in as_json["fields"]
    assert {"deliveries", "events", "transformed", "raw"} <= set(as_json)


def test_python_modules_import_from_the_configs_folder(tmp_path):
    """A python: transform module beside the config imports whatever the working folder."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "localfix_cli16.py").write_text("def keep(message):\n    return message\n")
    config = write_config(folder, free_port())
    config.write_text(config.read_text() + "    transforms:\n      - python: localfix_cli16:keep\n")
    result = hl7engine("check", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_send_prints_the_reason_of_each_rejection(tmp_path):
    """A message without MSH-10 is printed as "(no control id) -> AR" with the ERR text; --json too."""
    port = free_port()
    process = launch(write_config(tmp_path, port), port)
    try:
        sample = str(CORPUS_DIR / "malformed" / "cdcti_msh_present_but_missing_msh10.hl7")
        sent = hl7engine("send", f"127.0.0.1:{port}", sample)
        line = refused(sent, 1)
        assert sent.stderr.strip().endswith("(no control id) -> AR: MSH-10 message control id missing"), line
        as_json = hl7engine("send", "--json", f"127.0.0.1:{port}", sample)
        outcome = json.loads(as_json.stdout)
        assert (outcome["sent"], outcome["codes"]) == (1, {"AR": 1})
        assert outcome["failed"][0]["reason"] == "MSH-10 message control id missing"
    finally:
        stop(process)
