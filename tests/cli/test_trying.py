"""`hl7engine try`: the bundled config's channels tried on the repository's samples, nothing stored."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.fakes.process import ENGINE

REPO = Path(__file__).resolve().parents[2]


def run_try(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "channels.yaml", tmp_path / "channels.yaml")
    return subprocess.run(
        [*ENGINE, "try", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def test_try_prints_each_destinations_field_changes_and_stores_nothing(tmp_path):
    """`try pms-adt` prints the changed fields per destination; no store, queue or output folder appears."""
    sample = str(REPO / "samples/pms/01_adt_a04_register.hl7")
    result = run_try(tmp_path, "pms-adt", sample)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{sample}#1 PMS0001 ADT^A04: accepted by pms-adt"
    assert lines[1] == "  -> emr: would deliver, 2 change(s)"
    assert lines[2].strip() == "MSH-5 (Receiving Application): 'HL7ENGINE' -> 'EMR'"
    assert lines[3].strip() == "PV1-3.1 (Assigned Patient Location / Point Of Care): '4N' -> 'NORTH-4'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["channels.yaml"]


def test_try_json_says_why_a_message_is_not_accepted(tmp_path):
    """`--json` gives one object per message; a DFT tried on pms-adt names the channel that takes it."""
    result = run_try(tmp_path, "pms-adt", str(REPO / "samples/pms"), "--json")
    assert result.returncode == 0, result.stderr
    trials = json.loads(result.stdout)
    assert [t["outcome"] for t in trials] == ["accepted", "accepted", "not accepted"]
    assert "channel 'pms-dft'" in trials[2]["reason"]
    changes = trials[1]["destinations"][0]["changes"]
    assert {"path": "PV1-3.1", "kind": "changed", "name": "Assigned Patient Location / Point Of Care",
            "old": "5S", "new": "SOUTH-5"} in changes  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["channels.yaml"]


def test_try_unknown_channel_is_a_one_line_error(tmp_path):
    """An unknown channel: one line naming the known ones, exit 2, no traceback."""
    result = run_try(tmp_path, "nosuch", str(REPO / "samples/pms"))
    assert result.returncode == 2
    assert result.stderr.startswith("hl7engine try: no channel named 'nosuch'")
    assert "Traceback" not in result.stderr


def test_try_missing_file_is_a_one_line_error(tmp_path):
    """A file that cannot be read: one line naming it, exit 1, no traceback."""
    result = run_try(tmp_path, "pms-adt", "nosuch.hl7")
    assert result.returncode == 1
    assert result.stderr == "hl7engine try: cannot read nosuch.hl7: No such file or directory\n"


def test_try_of_files_holding_no_message_is_a_one_line_error(tmp_path):
    """An empty file or folder: one line saying no message was found there, exit 1 (also with --json)."""
    (tmp_path / "empty.hl7").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    for args in (["empty.hl7"], ["folder"], ["--json", "empty.hl7", "folder"]):
        result = run_try(tmp_path, "pms-adt", *args)
        assert result.returncode == 1, result.stdout
        assert result.stdout == ""
        assert result.stderr.startswith("hl7engine try: no HL7 message in ")


def test_try_reads_stdin_for_a_dash_like_send(tmp_path):
    """`try CHANNEL -` tries the messages given on stdin, named `stdin#n`."""
    shutil.copy(REPO / "channels.yaml", tmp_path / "channels.yaml")
    result = subprocess.run(
        [*ENGINE, "try", "pms-adt", "-"],
        input=(REPO / "samples/pms/01_adt_a04_register.hl7").read_bytes(),
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == "stdin#1 PMS0001 ADT^A04: accepted by pms-adt"
