"""engine/cli/validate.py and convert.py: findings of files, and ER7 <-> v2.xml, without the engine."""

from __future__ import annotations

import json

from click.testing import CliRunner

from engine.cli import main as cli
from engine.cli.convert import TARGETS

GOOD = (
    "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ADT^A01^ADT_A01|C1|P|2.5.1\r"
    "EVN|A01|20260101120000\r"
    "PID|1||P1^^^PMS^MR||DOE^JOHN||19800101|M\r"
    "PV1|1|I\r"
)
BAD = GOOD.replace("C1", "C2").replace("19800101", "1980-01-01")


def test_validate_prints_findings_and_exits_1_when_a_message_fails(tmp_path):
    """One line per message and one per finding; exit 1 because one message fails strict validation."""
    (tmp_path / "good.hl7").write_text(GOOD)
    (tmp_path / "bad.hl7").write_text(BAD)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "good.hl7"), str(tmp_path / "bad.hl7")])
    assert result.exit_code == 1
    assert result.output.splitlines()[:3] == [
        f"{tmp_path / 'good.hl7'}#1: passes (ADT_A01, version 2.5.1)",
        f"{tmp_path / 'bad.hl7'}#1: fails (ADT_A01, version 2.5.1)",
        "  E 102 PID-7.1: not a valid DTM value",
    ]


def test_validate_json_gives_one_object_per_message_and_exit_0_when_all_pass(tmp_path):
    """--json prints a JSON object per message of a file (here two back to back); all pass: exit 0."""
    path = tmp_path / "two.hl7"
    path.write_text(GOOD + GOOD.replace("C1", "C3"))
    result = CliRunner().invoke(cli, ["validate", "--json", str(path)])
    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["message"], r["structure"], r["failed"], r["findings"]) for r in reports] == [
        (f"{path}#1", "ADT_A01", False, []),
        (f"{path}#2", "ADT_A01", False, []),
    ]


def test_validate_version_option_overrides_msh_12(tmp_path):
    """--version 2.3 checks the 2.5.1 message against 2.3 (XPN has 8 components there)."""
    path = tmp_path / "m.hl7"
    path.write_text(GOOD.replace("DOE^JOHN", "DOE^JOHN^^^^^^^^X"))
    result = CliRunner().invoke(cli, ["validate", "--json", "--version", "2.3", str(path)])
    [report] = [json.loads(line) for line in result.output.splitlines()]
    assert report["version"] == "2.3"
    assert {
        "location": "PID-5.10",
        "code": 102,
        "severity": "W",
        "text": "component beyond the 8 that XPN defines",
    } in report["findings"]


def test_convert_to_xml_and_back_to_er7(tmp_path):
    """convert --to xml writes v2.xml per message; convert --to er7 of that file gives the message back."""
    source = tmp_path / "m.hl7"
    source.write_text(GOOD)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["convert", "--to", "xml", "--output-dir", str(out), str(source)])
    assert result.exit_code == 0, result.output
    xml = (out / "m.1.xml").read_text()
    assert '<ADT_A01 xmlns="urn:hl7-org:v2xml">' in xml and "<FN.1>DOE</FN.1>" in xml
    back = CliRunner().invoke(cli, ["convert", "--to", "er7", str(out / "m.1.xml")])
    assert back.exit_code == 0, back.output
    assert back.output == GOOD.replace("\r", "\n") + "\n"


def test_convert_reports_what_it_cannot_convert_and_exits_1(tmp_path):
    """A file with no MSH is named on stderr, the others are still converted, and the exit code is 1."""
    (tmp_path / "a.hl7").write_text("PID|1||X\r")
    (tmp_path / "b.hl7").write_text(GOOD)
    result = CliRunner().invoke(cli, ["convert", "--to", "xml", str(tmp_path)])
    assert result.exit_code == 1
    assert "a.hl7#1: not converted" in result.output and "<ADT_A01" in result.output


def test_targets_are_a_table_of_name_to_function_and_suffix():
    """Each target is (function of one message's ER7 text, file suffix): where another target plugs in."""
    assert sorted(TARGETS) == ["er7", "fhir", "xml"]
    convert, suffix = TARGETS["er7"]
    assert (convert("MSH|^~\\&|A\nPID|1\n"), suffix) == ("MSH|^~\\&|A\rPID|1\r", ".hl7")
