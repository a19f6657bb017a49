"""Smoke test of the benchmark harness (bench/): one short intake run against the ceiling and the engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hl7

from bench.loadgen import check_ack
from bench.messages import MIX, generate
from tests.fakes.bench import brief, run_report

MESSAGES = 300
ROOT = Path(__file__).resolve().parents[2]


def test_check_ack_accepts_only_a_positive_ack_for_the_control_id_sent():
    """AA and CA with the right MSA-2 pass; a wrong code, a wrong MSA-2 or no MSA is an error."""
    ack = b"MSH|^~\\&|E|F|A|B|20260101||ACK|9|P|2.5.1\rMSA|%s|%s\r"
    assert check_ack(ack % (b"AA", b"ID1"), b"ID1") is None
    assert check_ack(ack % (b"CA", b"ID1"), b"ID1") is None
    assert check_ack(ack % (b"AE", b"ID1"), b"ID1") == "MSA-1 is 'AE'"
    assert check_ack(ack % (b"AA", b"ID0"), b"ID1") == "MSA-2 is 'ID0', sent 'ID1'"
    assert check_ack(b"MSH|^~\\&|E\r", b"ID1") == "reply has no MSA segment"


def test_generated_messages_are_deterministic_valid_hl7_of_every_kind():
    """The same seed gives the same messages; python-hl7 parses each, MSH-10 is the control id written in."""
    templates = generate(200, seed=7)
    assert templates == generate(200, seed=7)
    assert {t.kind for t in templates} == {kind for kind, _ in MIX}
    for template in templates:
        text = template.render(b"CID42").decode("utf-8")
        message = hl7.parse(text)
        assert str(message.segment("MSH")[10]) == "CID42"
        assert str(message.segment("MSH")[9]).startswith(template.kind)
        assert (str(message.segment("MSH")[18]) == "UNICODE UTF-8") == (not text.isascii())
        if template.kind == "ORU^R01":
            assert len(message.segments("OBX")) == 10


def test_intake_run_reports_every_figure_with_no_ack_errors(tmp_path):
    """bench/run.py measures the ceiling and the engine on 1 connection and writes a complete report."""
    report = run_report(
        ["--scenario", "intake", "--systems", "ceiling,engine", *brief(seconds=5, messages=MESSAGES)],
        tmp_path,
        timeout=120,
    )
    assert report["machine"]["cores"] >= 1 and report["python"] and report["versions"]["hl7engine"]
    (intake,) = [s for s in report["scenarios"] if s["name"] == "intake"]
    rows = {row["system"]: row for row in intake["rows"]}
    assert set(rows) == {"ceiling", "engine"}
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        assert row["errors"] == 0, row["error_samples"]
        assert row["connections"] == 1
        assert 0 < row["messages"] <= MESSAGES
        assert row["rate"] > 0 and row["seconds"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["server_cpu_seconds"] >= 0 and row["peak_rss_mb"] > 0
    engine = rows["engine"]
    assert engine["observed"]["stored"] == engine["messages"] + engine["warmup_messages"]
    markdown = (tmp_path / "out" / "latest.md").read_text()
    assert "| system | conns | msg/s | p50 ms | p99 ms |" in markdown
    assert "Engine ÷ baseline" in markdown


def test_record_drain_settles_every_queued_delivery():
    """bench/record_drain.py drains its whole backlog through the record destination and says so."""
    done = run_script("record_drain.py", "--messages", "60", "--patients", "10")
    assert done.stdout.startswith("60 record deliveries drained:"), done.stdout + done.stderr


def test_intake_cpu_has_every_message_acknowledged_and_prints_the_cpu_a_message():
    """bench/intake_cpu.py runs the engine's intake and a client process; every ACK positive, one line."""
    done = run_script("intake_cpu.py", "--messages", "60", "--connections", "2")
    assert done.stdout.splitlines()[-1].startswith("2 connection(s): "), done.stdout + done.stderr
    assert " us CPU a message, " in done.stdout


def test_pipeline_cpu_processes_every_message_at_intake_for_its_three_destinations():
    """bench/pipeline_cpu.py takes each message through the intake to a row QUEUED with three deliveries."""
    done = run_script("pipeline_cpu.py", "--messages", "40")
    expected = "40 of 40 rows processed at intake, each with 3 deliveries\n"
    assert done.stdout == expected, done.stdout + done.stderr


def run_script(name: str, *arguments: str) -> subprocess.CompletedProcess:
    """Run bench/``name`` with ``arguments``, its output captured; raises when it fails or takes 2 minutes."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
