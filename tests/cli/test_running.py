"""engine/cli/running.py: one engine per data folder, held by a lock while it runs."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from tests.fakes.harness import free_port
from tests.fakes.process import ENGINE, adt, launch, stop, write_config


def run_until_it_exits(config: Path) -> subprocess.CompletedProcess:
    """`hl7engine run -c config --workers 0` in the config's folder, expected to exit on its own."""
    return subprocess.run(
        [*ENGINE, "run", "-c", str(config), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )


def test_a_second_engine_on_the_same_data_folder_exits_1_and_leaves_the_pid_file(tmp_path):
    """A second `run` on the same data folder exits 1 naming the first; its pid file and reload still work."""
    port = free_port()
    config = write_config(tmp_path, port)
    first = launch(config, port)
    try:
        pid_file = tmp_path / "data" / "hl7engine.pid"
        assert pid_file.read_text().strip() == str(first.pid)
        second = run_until_it_exits(config)
        assert second.returncode == 1
        assert f"another engine (pid {first.pid}) is running on the data folder" in second.stderr
        assert "Traceback" not in second.stderr
        assert pid_file.read_text().strip() == str(first.pid)
        reloaded = subprocess.run(
            [*ENGINE, "reload", "-c", str(config)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert reloaded.returncode == 0 and f"asked engine {first.pid}" in reloaded.stdout
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(1))).code == "AA"
    finally:
        stop(first)


def test_the_lock_goes_with_the_process_even_killed(tmp_path):
    """After a kill -9 the kernel releases the lock: the next engine starts on the same data folder."""
    port = free_port()
    config = write_config(tmp_path, port)
    first = launch(config, port)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    second = launch(config, port)
    stop(second)


def test_a_data_folder_that_cannot_be_made_is_one_line_and_exit_1(tmp_path):
    """engine.data_dir naming a file: `run` says it cannot use the folder, in one line, exit 1."""
    config = write_config(tmp_path, free_port())
    (tmp_path / "data").write_text("a file where the data folder should be\n")
    result = run_until_it_exits(config)
    assert result.returncode == 1
    assert result.stderr == f"hl7engine: cannot use the data folder {tmp_path / 'data'}: File exists\n"


def test_a_web_port_in_use_is_one_line_and_a_clean_stop(tmp_path):
    """engine.http's port taken: `run` says it cannot start, exits 1, and its stop logs no traceback."""
    config = write_config(tmp_path, free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = f'  http: {{endpoint: "tcp:{taken.getsockname()[1]}:interface=127.0.0.1"}}\n'
        config.write_text(config.read_text().replace("  data_dir: data\n", "  data_dir: data\n" + http))
        result = run_until_it_exits(config)
    assert result.returncode == 1
    assert "hl7engine: cannot start: Couldn't listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
