"""The `hl7engine` command as a user runs it: real processes, real sockets, the real database.

`hash-password` runs in click's runner: it only reads the terminal and prints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_twisted
from click.testing import CliRunner

from engine.cli import main as cli
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.model import Status
from engine.store.cipher import read_key
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.web.passwords import verify_password
from tests.fakes.certs import CertificateAuthority
from tests.fakes.corpus import CORPUS_DIR
from tests.fakes.harness import free_port, in_thread, make_config, port_of, start_engine
from tests.fakes.messages import new_message
from tests.fakes.process import ENGINE, adt, start, wait_for_port, write_config


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
    """The bundled channels.yaml is valid, without a warning."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [*ENGINE, "check", "-c", str(root / "channels.yaml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and result.stderr == ""


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
        resent = subprocess.run(
            [*ENGINE, "resend", "1", "--json", "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert json.loads(resent.stdout) == {"messages": 1, "deliveries": [3]}, resent.stderr
        wait_for_files(3)
        again = subprocess.run(
            [*ENGINE, "reprocess", "--channel", "archive", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stderr
        assert "1 message(s) will be processed again" in again.stdout
        wait_for_files(4)
        again = subprocess.run(
            [*ENGINE, "reprocess", "1", "--json", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(again.stdout) == {"messages": 1, "reprocessed": 1}, again.stderr
        wait_for_files(5)
        assert len({path.read_bytes() for path in out.glob("*.hl7")}) == 1

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
    upgrade(create_engine_for(store))
    refused = runner.invoke(cli, ["rekey", "--db", store, "-c", str(tmp_path / "none.yaml")])
    assert refused.exit_code == 1 and "needs encryption configured" in refused.output


def _old_store(tmp_path: Path, count: int) -> Path:
    """write_config's config with retention_days: 1; its store holds ``count`` SENT messages 10 days old."""
    config = write_config(tmp_path, free_port())
    config.write_text(config.read_text().replace('types: ["*"]', 'types: ["*"]\n    retention_days: 1'))
    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}")
    upgrade(engine)
    old = datetime.now(UTC) - timedelta(days=10)
    MessageRepository(engine).insert(
        [new_message(adt(n), channel="everything", status=Status.SENT, received_at=old) for n in range(count)]
    )
    engine.dispose()
    return config


def test_reload_from_the_command_line_applies_an_edited_table_and_module(tmp_path):
    """`hl7engine reload` against a running engine applies an edited CSV table and python: module.

    Its log names what changed; messages after the reload carry the new table entry and code.
    """
    port = free_port()
    (tmp_path / "sites.csv").write_text("code,site\nCLINIC,SITE-OLD\n")
    hatch = tmp_path / "cli_reload_hatch.py"
    code = 'def mark(message):\n    message.set("MSH-8", "{}")\n    return message\n'
    hatch.write_text(code.format("OLD"))
    config = tmp_path / "channels.yaml"
    config.write_text(
        f"""
engine:
  data_dir: data
listeners:
  - name: main
    endpoint: "tcp:{port}:interface=127.0.0.1"
tables:
  sites:
    csv: sites.csv
    key: code
    value: site
channels:
  - name: everything
    source: main
    accept:
      types: ["*"]
    transforms:
      - map:
          field: MSH-4
          table: sites
      - python: cli_reload_hatch:mark
    destinations:
      - name: files
        type: file
        directory: out
        filename: "{{control_id}}.hl7"
"""
    )
    paths = [str(tmp_path), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    process = subprocess.Popen(
        [*ENGINE, "run", "-c", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )

    def sent(n: int) -> tuple[str, str]:
        """Send adt(n); MSH-4 and MSH-8 of what the destination wrote for it."""
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(n))).code == "AA"
        written = tmp_path / "out" / f"C{n:06d}.hl7"
        deadline = time.monotonic() + 10
        while not written.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        fields = written.read_bytes().split(b"\r")[0].decode().split("|")
        return fields[3], fields[7]

    try:
        wait_for_port(port, process)
        assert sent(1) == ("SITE-OLD", "OLD")
        (tmp_path / "sites.csv").write_text("code,site\nCLINIC,SITE-NEW\n")
        hatch.write_text(code.format("NEW"))
        reloaded = subprocess.run(
            [*ENGINE, "reload", "-c", str(config)], capture_output=True, text=True, timeout=60, env=env
        )
        assert reloaded.returncode == 0, reloaded.stderr
        deadline = time.monotonic() + 10
        n, marks = 2, sent(2)
        while marks != ("SITE-NEW", "NEW") and time.monotonic() < deadline:
            n += 1
            marks = sent(n)
        assert marks == ("SITE-NEW", "NEW")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert (
        b"config reloaded: module cli_reload_hatch changed; table sites changed; channel everything changed"
        in stderr
    )


TLS_ENGINE = """
engine:
  data_dir: {data_dir}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
    allowed_networks: [127.0.0.0/8]
    tls:
      cert_file: %s
      key_file: %s
      client_ca_file: %s
channels:
  - name: everything
    source: main
    accept:
      types: ["*"]
"""


@pytest_twisted.inlineCallbacks
def test_send_over_tls_with_a_client_certificate(tmp_path):
    """`send --tls --ca --cert --key` is answered AA by a listener that requires a client certificate;
    without one the listener refuses the handshake and `send` says so and exits 1."""
    ca = CertificateAuthority(tmp_path)
    cert, key = ca.issue("server")
    client_cert, client_key = ca.issue("hub", client=True)
    message = tmp_path / "adt.hl7"
    message.write_bytes(
        b"MSH|^~\\&|PMS|NORTH|HUB|TEST|20260101120000||ADT^A04|T1|P|2.5.1\rPID|1||1^^^PMS^MR\r"
    )
    engine = start_engine(make_config(tmp_path, text=TLS_ENGINE % (cert, key, ca.cert_file)))
    address = f"127.0.0.1:{port_of(engine)}"
    tls = ["--tls", "--ca", str(ca.cert_file)]
    try:
        sent, refused = yield in_thread(
            lambda: [
                subprocess.run(
                    [*ENGINE, "send", address, str(message), *tls, *identity],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                for identity in (["--cert", str(client_cert), "--key", str(client_key)], [])
            ]
        )
    finally:
        yield engine.stopService()
    assert (sent.returncode, sent.stdout) == (0, "sent 1 message(s): AA 1\n"), sent.stderr
    assert refused.returncode == 1
    assert "alert certificate required" in refused.stderr  # TLS 1.3: the refusal arrives at the first read


def test_send_tls_options_are_checked_before_connecting(tmp_path):
    """--ca/--cert/--key need --tls, --cert needs --key, and each file must hold PEM: usage errors."""
    ca = CertificateAuthority(tmp_path)
    cert, _key = ca.issue("hub", client=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    runner = CliRunner()
    for arguments, message in [
        (["--ca", str(ca.cert_file)], "--ca, --cert and --key need --tls"),
        (["--tls", "--cert", str(cert)], "give --cert and --key together"),
        (["--tls", "--ca", str(junk)], "does not hold a PEM certificate"),
    ]:
        result = runner.invoke(cli, ["send", "127.0.0.1:1", *arguments])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_prune_dry_run_prune_and_show_from_the_command_line(tmp_path):
    """`prune --dry-run` counts and changes nothing; `prune` empties the content; `messages show` says so."""
    config = _old_store(tmp_path, 30)
    dry = CliRunner().invoke(cli, ["prune", "--dry-run", "-c", str(config)])
    assert dry.exit_code == 0, dry.output
    assert "everything: would prune 30 message(s)" in dry.output
    counted = json.loads(CliRunner().invoke(cli, ["prune", "--dry-run", "--json", "-c", str(config)]).output)
    assert (counted["dry_run"], counted["total"]["messages"]) == (True, 30)
    assert [(t["target"], t["messages"]) for t in counted["targets"]] == [("everything", 30)]
    shown = CliRunner().invoke(cli, ["messages", "show", "1", "-c", str(config)])
    assert "SECRETNAME" in shown.output

    pruned = CliRunner().invoke(cli, ["prune", "--batch", "7", "-c", str(config)])
    assert pruned.exit_code == 0, pruned.output
    assert "everything: pruned 30 message(s)" in pruned.output and "total: pruned 30" in pruned.output
    assert "file: " in pruned.output
    shown = CliRunner().invoke(cli, ["messages", "show", "1", "-c", str(config)])
    assert shown.exit_code == 0 and "(content removed by retention at" in shown.output
    assert "SECRETNAME" not in shown.output and "PID|" not in shown.output
    again = CliRunner().invoke(cli, ["prune", "-c", str(config)])
    assert again.exit_code == 0 and "total: pruned 0 message(s)" in again.output


def test_prune_exit_statuses(tmp_path):
    """Nothing configured to keep: 2 (usage); a store that fails: 1."""
    config = write_config(tmp_path, free_port())
    nothing = CliRunner().invoke(cli, ["prune", "-c", str(config)])
    assert nothing.exit_code == 2 and "retention_days" in nothing.output
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database at all" * 100)
    failed = CliRunner().invoke(cli, ["prune", "--days", "1", "--db", f"sqlite:///{broken}"])
    assert (failed.exit_code, failed.output) == (
        1,
        "hl7engine: opening the store failed: file is not a database\n",
    )


def test_prune_vacuum_refuses_while_the_engine_runs(tmp_path):
    """`prune --vacuum` on SQLite is refused (exit 2) while the engine runs: VACUUM would hold intake up."""
    config = _old_store(tmp_path, 3)
    (tmp_path / "data" / "hl7engine.pid").write_text(f"{os.getpid()}\n")  # a live process
    refused = CliRunner().invoke(cli, ["prune", "--vacuum", "-c", str(config)])
    assert refused.exit_code == 2 and "stop it before --vacuum" in refused.output
    (tmp_path / "data" / "hl7engine.pid").unlink()
    done = CliRunner().invoke(cli, ["prune", "--vacuum", "-c", str(config)])
    assert done.exit_code == 0 and "total: pruned 3 message(s)" in done.output
