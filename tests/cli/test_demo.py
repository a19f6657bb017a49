"""`hl7engine demo`: simulated systems feed the engine; the record fills, billing fails and recovers."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import time

from tests.fakes.process import ENGINE, wait_for_port

PORT_BASE = 21340  # listeners 21340-21342, console 21343, receivers 21350-21352


def test_demo_feeds_the_record_from_three_systems_and_stops_cleanly_on_sigint(tmp_path):
    """Ten seconds of demo: PMS, EMR and LAB messages stored, people with ids from several systems,
    billing deliveries retried while it failed and sent after, and SIGINT leaves nothing listening."""
    folder = tmp_path / "demo"
    process = subprocess.Popen(
        [*ENGINE, "demo", "--dir", str(folder), "--rate", "6", "--port-base", str(PORT_BASE),
         "--fail-after", "1", "--fail-for", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(PORT_BASE, process)
        time.sleep(10)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, stderr.decode()
    out = stdout.decode()
    assert "console http://127.0.0.1:21343/ (user demo, password demo)" in out
    assert "demo: billing is failing" in out and "demo: billing recovered" in out

    db = sqlite3.connect(folder / "data" / "hl7engine.db")
    db.execute("ATTACH DATABASE ? AS record", (str(folder / "data" / "hl7engine-record.db"),))
    senders = dict(db.execute("SELECT sending_application, count(*) FROM messages GROUP BY 1"))
    assert set(senders) == {"PMS", "EMR", "LAB"}
    systems = db.execute(
        "SELECT max(n) FROM"
        " (SELECT count(DISTINCT source_system) AS n FROM record_identifiers GROUP BY patient_id)"
    ).fetchone()[0]
    assert systems >= 2
    retried = db.execute("SELECT count(*) FROM deliveries WHERE destination = 'billing' AND attempts > 1")
    assert retried.fetchone()[0] >= 1
    sent_after = db.execute(
        "SELECT count(*) FROM deliveries WHERE destination = 'billing' AND status = 'SENT'"
    )
    assert sent_after.fetchone()[0] >= 1
    for offset in (0, 1, 2, 3, 10, 11, 12):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", PORT_BASE + offset)) != 0, f"port {PORT_BASE + offset} open"


def test_the_demo_holds_its_data_folder_so_no_second_engine_runs_on_it(tmp_path):
    """While a demo runs, `run` of its config and a second demo in its folder exit 1 naming it; its
    config is not written over. Started as a script's background job (SIGINT ignored), SIGINT stops it."""
    folder, base = tmp_path / "demo", 21380  # listeners 21380-21382, console 21383, receivers 21390-21392
    demo = subprocess.Popen(
        [*ENGINE, "demo", "--dir", str(folder), "--port-base", str(base), "--fail-after", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_for_port(base, demo)
        config = (folder / "channels.yaml").read_text()
        for command in (
            ["run", "-c", str(folder / "channels.yaml"), "--workers", "0"],
            ["demo", "--dir", str(folder), "--port-base", str(base + 100)],
        ):
            second = subprocess.run([*ENGINE, *command], capture_output=True, text=True, timeout=60)
            assert second.returncode == 1, second.stderr
            assert f"another engine (pid {demo.pid}) is running on the data folder" in second.stderr
            assert "Traceback" not in second.stderr
        assert (folder / "channels.yaml").read_text() == config
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert demo.returncode == 0, stderr.decode()
