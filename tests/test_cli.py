"""The `hl7engine` command as a user runs it: real processes, real sockets, the real database.

`hash-password` runs in click's runner: it only reads the terminal and prints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main as cli
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.store.cipher import read_key
from engine.web.passwords import verify_password
from tests.fakes.corpus import CORPUS_DIR
from tests.fakes.harness import free_port

ENGINE = [sys.executable, "-m", "engine"]


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(
        f"""
engine:
  data_dir: data
listeners:
  - name: main
    endpoint: "tcp:{port}:interface=127.0.0.1"
channels:
  - name: everything
    source: main
    accept:
      types: ["*"]
"""
    )
    return path


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"engine exited early: {process.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("engine did not start listening")


def start(tmp_path: Path):
    port = free_port()
    config = write_config(tmp_path, port)
    process = subprocess.Popen(
        [*ENGINE, "run", "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path
    )
    wait_for_port(port, process)
    return process, port, config


def adt(n: int) -> bytes:
    return (
        b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C%06d|P|2.5.1\r"
        b"EVN|A04|20260101120000\rPID|1||%d^^^PMS^MR||SECRETNAME^JANE||19800101|F\r" % (n, n)
    )


def test_check_reports_every_problem_with_its_path(tmp_path):
    """`hl7engine check` on a broken config prints every problem with its YAML path and exits non-zero."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners:\n"
        "  - name: a\n"
        "    endpoint: 'tcp:2575'\n"
        "    colour: red\n"
        "channels:\n"
        "  - name: c\n"
        "    source: nowhere\n"
        "    accept: {types: ['ADT^^']}\n"
    )
    result = subprocess.run([*ENGINE, "check", "-c", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "listeners[0].colour" in out
    assert "channels[0].source" in out
    assert "channels[0].accept.types[0]" in out


def test_check_accepts_the_bundled_config():
    """The bundled channels.yaml is valid."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [*ENGINE, "check", "-c", str(root / "channels.yaml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_run_send_messages_and_a_clean_stop(tmp_path):
    """run + send + messages: files are sent and acknowledged, and listed as JSON.

    SIGTERM then stops the engine cleanly.
    """
    process, port, config = start(tmp_path)
    try:
        sent = subprocess.run(
            [
                *ENGINE,
                "send",
                f"127.0.0.1:{port}",
                str(CORPUS_DIR / "adt" / "fhirconv_adt_a01_01.hl7"),
                str(CORPUS_DIR / "siu"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "AA" in sent.stdout
        bad = subprocess.run(
            [
                *ENGINE,
                "send",
                f"127.0.0.1:{port}",
                str(CORPUS_DIR / "malformed" / "cdcti_msh_present_but_missing_msh10.hl7"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1
        assert "AR" in bad.stdout
        listed = subprocess.run(
            [*ENGINE, "messages", "list", "-c", str(config), "--json", "--type", "SIU"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        siu_files = len(list((CORPUS_DIR / "siu").iterdir()))
        assert len(rows) >= siu_files
        assert {"id", "channel", "control_id", "type", "status", "received_at"} <= set(rows[0])
        assert all(r["type"].startswith("SIU") for r in rows)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()


def test_logs_carry_no_patient_data(tmp_path):
    """At the default log level nothing of the message content reaches the log."""
    process, port, _ = start(tmp_path)
    try:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(1))).code == "AA"
            client.request(adt(2).replace(b"|2.5.1", b"|7.7"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert b"SECRETNAME" not in stderr and b"19800101" not in stderr
    assert b"rejected" in stderr  # the rejection itself is logged, without content


def test_every_acknowledged_message_survives_kill_9(tmp_path):
    """Messages answered AA are in the database after the engine is killed with SIGKILL at a random moment."""
    process, port, config = start(tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        try:
            with MLLPClient("127.0.0.1", port, timeout=5) as client:
                for i in range(2000):
                    if stop.is_set():
                        return
                    n = worker * 100000 + i
                    reply = parse_reply(client.request(adt(n)))
                    if reply.code == "AA":
                        with lock:
                            acknowledged.append(reply.control_id)
        except (OSError, ConnectionError, Exception):
            return

    workers = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    target = random.randint(50, 400)
    while len(acknowledged) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    assert len(acknowledged) >= 50
    db = tmp_path / "data" / "hl7engine.db"
    with sqlite3.connect(db) as conn:
        stored = {
            row[0] for row in conn.execute("select control_id from messages where status != 'REJECTED'")
        }
    missing = set(acknowledged) - stored
    assert missing == set()


def test_resend_reprocess_and_reload_from_the_command_line(tmp_path):
    """`resend` and `reprocess` reach the running engine through the store.

    `reload` applies an edited config.
    """
    port = free_port()
    config = tmp_path / "channels.yaml"
    body = f"""
engine:
  data_dir: data
listeners:
  - name: main
    endpoint: "tcp:{port}:interface=127.0.0.1"
channels:
  - name: archive
    source: main
    accept:
      types: ["*"]
    destinations:
      - name: files
        type: file
        directory: out
        filename: "{{delivery_id}}.hl7"
"""
    config.write_text(body)
    process = subprocess.Popen(
        [*ENGINE, "run", "-c", str(config)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path
    )
    out = tmp_path / "out"

    def wait_for_files(count: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(out.glob("*.hl7"))) < count:
            time.sleep(0.1)
        assert len(list(out.glob("*.hl7"))) == count

    try:
        wait_for_port(port, process)
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(1))).code == "AA"
        wait_for_files(1)
        resent = subprocess.run(
            [*ENGINE, "resend", "1", "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert resent.returncode == 0, resent.stderr
        assert "queued 1 delivery" in resent.stdout
        wait_for_files(2)
        again = subprocess.run(
            [*ENGINE, "reprocess", "--channel", "archive", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stderr
        assert "1 message(s) will be processed again" in again.stdout
        wait_for_files(3)
        assert (out / "1.hl7").read_bytes() == (out / "2.hl7").read_bytes() == (out / "3.hl7").read_bytes()

        config.write_text(body.replace('types: ["*"]', 'types: ["ADT"]'))
        reloaded = subprocess.run(
            [*ENGINE, "reload", "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert reloaded.returncode == 0, reloaded.stderr
        deadline = time.monotonic() + 10
        code = None
        while time.monotonic() < deadline:
            with MLLPClient("127.0.0.1", port, timeout=10) as client:
                code = parse_reply(
                    client.request(adt(2).replace(b"ADT^A04^ADT_A01", b"ORU^R01^ORU_R01"))
                ).code
            if code == "AR":
                break
            time.sleep(0.2)
        assert code == "AR"  # the reloaded channel no longer takes ORU
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"config reloaded" in stderr


def test_hash_password_command_prints_a_usable_hash():
    """`hl7engine hash-password` asks twice and prints a hash the server accepts."""
    result = CliRunner().invoke(cli, ["hash-password", "--iterations", "1000"], input="pw one\npw one\n")
    assert result.exit_code == 0, result.output
    encoded = result.output.strip().splitlines()[-1]
    assert verify_password("pw one", encoded)
    assert "pw one" not in result.output


def test_new_key_prints_a_fresh_key_and_rekey_refuses_a_store_without_encryption(tmp_path):
    """`hl7engine new-key` prints a usable key, a new one each time; `rekey` without encryption exits 1."""
    runner = CliRunner()
    first, second = (runner.invoke(cli, ["new-key"]) for _ in range(2))
    assert first.exit_code == 0 and len(read_key(first.output)) == 32
    assert first.output != second.output
    store = f"sqlite:///{tmp_path / 'store.db'}"
    refused = runner.invoke(cli, ["rekey", "--db", store, "-c", str(tmp_path / "none.yaml")])
    assert refused.exit_code == 1 and "needs encryption configured" in refused.output
