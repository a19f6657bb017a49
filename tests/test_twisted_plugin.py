"""twisted/plugins/hl7engine_plugin.py: `twistd hl7engine -c channels.yaml` runs the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from tests.fakes.harness import free_port
from tests.fakes.process import adt, wait_for_port, write_config

ROOT = Path(__file__).resolve().parent.parent
#: The twistd command of this Python (``python -m twisted`` is the other runner, twist).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _environment() -> dict[str, str]:
    """The tree under test first on the path: twistd finds the plugin in its twisted/plugins folder."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _twistd(tmp_path: Path, config: Path) -> subprocess.Popen:
    """`twistd -n hl7engine -c config` in the foreground, in tmp_path, its output piped."""
    return subprocess.Popen(
        [*TWISTD, "-n", "--pidfile", str(tmp_path / "twistd.pid"), "hl7engine", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_environment(),
    )


def test_twistd_lists_the_plugin():
    """`twistd --help` lists hl7engine among its commands."""
    listed = subprocess.run(
        [*TWISTD, "--help"], capture_output=True, text=True, timeout=60, env=_environment()
    )
    assert listed.returncode == 0, listed.stderr
    assert "hl7engine" in listed.stdout


def test_twistd_runs_the_engine_and_it_answers_mllp(tmp_path):
    """`twistd -n hl7engine -c channels.yaml` listens, acknowledges a message and stops on SIGTERM."""
    port = free_port()
    config = write_config(tmp_path, port)
    process = _twistd(tmp_path, config)
    try:
        wait_for_port(port, process)
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(1))).code == "AA"
        assert (tmp_path / "data" / "hl7engine.lock").read_text().strip() == str(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    # twistd stops cleanly, then ends itself with the signal it got (so the status says SIGTERM).
    assert process.returncode == -signal.SIGTERM
    assert b"Server Shut Down." in stdout


def test_twistd_reloads_its_config_on_sighup(tmp_path):
    """SIGHUP makes `twistd hl7engine` reload channels.yaml, as `hl7engine run` does: a listener added to
    the file listens and acknowledges; the engine's pid file names the process while it runs."""
    port, added = free_port(), free_port()
    config = write_config(tmp_path, port)
    pid_file = tmp_path / "data" / "hl7engine.pid"
    process = _twistd(tmp_path, config)
    try:
        wait_for_port(port, process)
        assert pid_file.read_text().strip() == str(process.pid)  # what `hl7engine reload` signals
        config.write_text(
            config.read_text().replace(
                "channels:\n",
                f'  - name: second\n    endpoint: "tcp:{added}:interface=127.0.0.1"\nchannels:\n'
                '  - name: added\n    source: second\n    accept:\n      types: ["*"]\n',
            )
        )
        process.send_signal(signal.SIGHUP)
        wait_for_port(added, process)
        with MLLPClient("127.0.0.1", added, timeout=10) as client:
            assert parse_reply(client.request(adt(2))).code == "AA"
        with MLLPClient("127.0.0.1", port, timeout=10) as client:  # the first listener kept running
            assert parse_reply(client.request(adt(3))).code == "AA"
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM
    assert b"config reloaded: channel added added; listener second added" in stdout
    assert not pid_file.exists()
