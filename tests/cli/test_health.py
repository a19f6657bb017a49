"""engine/cli/health.py: `hl7engine healthcheck` asks /readyz where the config's engine.http listens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from engine.config import load_config
from tests.fakes.harness import BASIC_CONFIG, free_port, in_thread, start_engine
from tests.fakes.process import ENGINE


def web_config(tmp_path: Path, endpoint: str) -> Path:
    """channels.yaml in tmp_path: the harness's engine with its web server on ``endpoint``."""
    body = BASIC_CONFIG.replace(
        "engine:\n", f'engine:\n  http:\n    endpoint: "{endpoint}"\n    users: {{{{}}}}\n', 1
    ).format(
        data_dir=tmp_path / "data", store_url="null", lock_timeout=5, max_frame_bytes=4194304, honour="false"
    )
    path = tmp_path / "channels.yaml"
    path.write_text(body)
    return path


def healthcheck(config: Path, *more: str) -> subprocess.CompletedProcess:
    """`hl7engine healthcheck -c config` as a container runs it: its exit status and what it said."""
    return subprocess.run(
        [*ENGINE, "healthcheck", "-c", str(config), "--timeout", "5", *more],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("interface", [":interface=127.0.0.1", ""])
@pytest_twisted.inlineCallbacks
def test_a_running_engine_is_healthy_until_a_listener_stops(tmp_path, interface):
    """0 and "ready" while the engine is ready; 1 with /readyz's reason once a listener stopped.

    A web server on every interface (the container's tcp:8080) is asked on the loopback.
    """
    port = free_port()
    config = web_config(tmp_path, f"tcp:{port}{interface}")
    engine = start_engine(load_config(config))
    try:
        ready = yield in_thread(healthcheck, config)
        assert (ready.returncode, ready.stdout) == (0, f"ready: http://127.0.0.1:{port}/readyz\n")
        yield engine.listeners["main"].stopService()
        unready = yield in_thread(healthcheck, config)
        assert (unready.returncode, unready.stderr) == (
            1,
            f"unhealthy: not ready: http://127.0.0.1:{port}/readyz: HTTP 503: listeners not bound: main\n",
        )
    finally:
        yield engine.stopService()


def test_a_closed_port_is_unhealthy_and_nothing_imports_twisted(tmp_path):
    """Nothing listening: exit 1 saying the connection was refused, having imported no Twisted."""
    port = free_port()
    config = web_config(tmp_path, f"tcp:{port}:interface=127.0.0.1")
    closed = healthcheck(config)
    assert closed.returncode == 1
    assert closed.stderr.startswith(
        f"unhealthy: http://127.0.0.1:{port}/readyz: [Errno 111] Connection refused"
    )
    code = (
        "import sys\nfrom engine.cli import main\ntry:\n"
        f"    main(['healthcheck', '-c', {str(config)!r}, '--timeout', '5'])\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert imported.stdout == "1 []\n"


def test_a_config_without_a_web_server_or_with_problems_is_unhealthy_with_status_1(tmp_path):
    """No engine.http, an endpoint on any free port, a config with problems: 1 (Docker reserves 2)."""
    without = tmp_path / "without.yaml"
    without.write_text("engine:\n  data_dir: data\n")
    any_port = web_config(tmp_path, "tcp:0")
    broken = tmp_path / "broken.yaml"
    broken.write_text("engine:\n  http:\n    endpoint: ${HL7ENGINE_TEST_UNSET_PORT}\n")
    missing = tmp_path / "missing.yaml"
    answers = [healthcheck(path) for path in (without, any_port, broken, missing)]
    assert [answer.returncode for answer in answers] == [1, 1, 1, 1]
    assert answers[0].stderr == f"unhealthy: {without} has no engine.http: no web server answers /readyz\n"
    assert answers[1].stderr == (
        "unhealthy: engine.http.endpoint: 'tcp:0' asks for any free port: give the port it listens on\n"
    )
    assert answers[2].stderr == (
        f"{broken}:3: engine.http.endpoint: environment variable HL7ENGINE_TEST_UNSET_PORT is not set\n"
        f"unhealthy: {broken}: 1 problem(s)\n"
    )
    assert answers[3].stderr.endswith(f"unhealthy: {missing}: 1 problem(s)\n")
