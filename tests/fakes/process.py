"""The engine as a user runs it: ``hl7engine run`` in a process of its own on a loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.fakes.harness import free_port

#: The `hl7engine` command of the tree under test.
ENGINE = [sys.executable, "-m", "engine"]


def write_config(tmp_path: Path, port: int) -> Path:
    """channels.yaml in tmp_path: one MLLP listener on ``port``, one channel that stores everything."""
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
    """Wait until the engine accepts connections on ``port``; fail if it exits or takes too long."""
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


def launch(config: Path, port: int) -> subprocess.Popen:
    """`hl7engine run -c config --workers 0` (one process on any machine) in its folder, once it listens."""
    process = subprocess.Popen(
        [*ENGINE, "run", "-c", str(config), "--workers", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=config.parent,
    )
    wait_for_port(port, process)
    return process


def start(tmp_path: Path):
    """An engine process on a free port with write_config's config: (process, port, config path)."""
    port = free_port()
    config = write_config(tmp_path, port)
    return launch(config, port), port, config


def stop(process: subprocess.Popen) -> bytes:
    """SIGTERM, wait for a clean exit (status 0), and return what the engine logged."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    return stderr


def adt(n: int) -> bytes:
    """ADT^A04 number ``n`` from PMS/CLINIC: control id C<n, six digits>, patient SECRETNAME^JANE."""
    return (
        b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C%06d|P|2.5.1\r"
        b"EVN|A04|20260101120000\rPID|1||%d^^^PMS^MR||SECRETNAME^JANE||19800101|F\r" % (n, n)
    )
