"""The systems under test: the engine (one per configuration) and the baselines, each its own process.

A ``System`` knows how to get ready (install what it needs, or say why it cannot), how to start
on a given port in a fresh work folder, what versions it runs, and what to check after a run.
``SYSTEMS`` lists them in report order; a scenario picks the ones it measures by name.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bench import deps, stores

BENCH = Path(__file__).resolve().parent
SERVERS = BENCH / "servers"
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A started server: waits until its port accepts connections, stops with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], port: int, log_path: Path):
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> None:
        """Return once the port accepts a connection.

        Raise with the server's log when it died or took too long.
        """
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"exited with {self.process.returncode} before listening: {self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"not listening on port {self.port} after {_READY_TIMEOUT:g} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, wait for a clean exit (the engine commits what it holds), SIGKILL after the timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT)
        self.exit_code = self.process.returncode
        self._log.close()

    def log_tail(self, lines: int = 5) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " / ".join(text[-lines:]) or "(no output)"


@dataclass(frozen=True)
class RunContext:
    """Which engine runs, and how its interpreter is started."""

    engine_root: Path  # folder whose engine/ package is run
    engine_source: str  # how the report names it, e.g. "working tree at cc2e456"
    engine_python_args: list[str] = field(default_factory=list)  # before "-m engine", e.g. a profiler


class System:
    """One server the load generator measures."""

    name: str
    label: str
    role: str = "baseline"  # or "engine"
    known_issue: str = ""  # shown with its errors in the report

    def prepare(self) -> str | None:
        """Install what this system needs; the reason when it cannot run here."""
        return None

    def command(
        self, port: int, workdir: Path, context: RunContext
    ) -> tuple[list[str], Path, dict[str, str]]:
        """argv, working folder and environment of the server process."""
        raise NotImplementedError

    def versions(self, context: RunContext) -> dict[str, str]:
        """What runs, with its version."""
        return {}

    def start(
        self, port: int, workdir: Path, context: RunContext, wrap: list[str] | None = None
    ) -> ServerProcess:
        """Start the server (``wrap`` prefixes the argv, e.g. a profiler) and wait until it listens."""
        argv, cwd, env = self.command(port, workdir, context)
        server = ServerProcess(
            [*(wrap or []), *argv], cwd=cwd, env=env, port=port, log_path=workdir / "server.log"
        )
        try:
            server.wait_ready()
        except Exception:
            server.stop()
            raise
        return server

    def observe(self, workdir: Path) -> dict:
        """Facts to check after the server stopped (e.g. rows stored)."""
        return {}


def python_env(extra_path: Path | None = None) -> dict[str, str]:
    """This environment, with extra_path first on PYTHONPATH."""
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return env


#: The channel of an intake run: whatever arrives is stored and answered, nothing else.
INTAKE_CHANNEL = {"name": "intake", "source": "bench", "accept": {"types": ["*"]}}


@dataclass(frozen=True)
class EngineSetup:
    """What an engine row runs behind its one MLLP listener: channels, lookup tables, store.

    The listener is named ``bench``.
    """

    channels: tuple[dict, ...] = (INTAKE_CHANNEL,)
    tables: dict | None = None
    store_url: str | None = None  # None: SQLite in the row's work folder
    existing_messages: int = 0  # messages in the store before the row (ids 1..n of a pre-filled store)


class Engine(System):
    """``python -m engine run`` on a generated config: one MLLP listener and the setup's channels.

    By default the setup has one catch-all channel and no destinations. ``workers`` and
    ``intake_processes`` are ``run``'s ``--workers`` and ``--intake-processes``.
    """

    role = "engine"

    def __init__(
        self,
        name: str,
        label: str,
        durability: str,
        setup: EngineSetup = EngineSetup(),
        *,
        encrypted: bool = False,
        workers: int = 0,
        intake_processes: int = 1,
    ):
        self.name = name
        self.label = label
        self.durability = durability
        self.setup = setup
        self.encrypted = encrypted  # engine.store.encryption on, with keys in files of the row's folder
        self.workers = workers
        self.intake_processes = intake_processes

    @property
    def process_options(self) -> list[str]:
        """The ``run`` options for the worker and intake processes (none for the single process)."""
        options = []
        if self.workers:
            options += ["--workers", str(self.workers)]
        if self.intake_processes > 1:
            options += ["--intake-processes", str(self.intake_processes)]
        return options

    def configured(self, label: str, setup: EngineSetup) -> Engine:
        """This engine (name, durability, encryption, processes) with another setup: a scenario's variant.

        The label names the processes too, so the rows of the variants stay apart.
        """
        suffix = f" ({' '.join(self.process_options)})" if self.process_options else ""
        return Engine(
            self.name,
            label + suffix,
            self.durability,
            setup,
            encrypted=self.encrypted,
            workers=self.workers,
            intake_processes=self.intake_processes,
        )

    def store_url(self, workdir: Path) -> str:
        """Where this row's store is."""
        return self.setup.store_url or stores.sqlite_url(workdir / "data" / "hl7engine.db")

    def config(self, port: int, workdir: Path) -> str:
        """The channels.yaml of a row."""
        store = {"durability": self.durability, "url": self.store_url(workdir)}
        if self.encrypted:
            for name in ("current.key", "index.key"):
                (workdir / name).write_text(base64.b64encode(os.urandom(32)).decode())
            store["encryption"] = {
                "key": "current",
                "keys": {"current": {"file": str(workdir / "current.key")}},
                "index": {"file": str(workdir / "index.key")},
            }
        document = {
            "engine": {"data_dir": str(workdir / "data"), "store": store},
            "listeners": [{"name": "bench", "type": "mllp", "endpoint": f"tcp:{port}:interface=127.0.0.1"}],
            "channels": list(self.setup.channels),
        }
        if self.setup.tables:
            document["tables"] = self.setup.tables
        return json.dumps(document, indent=2)  # JSON is YAML

    def command(self, port, workdir, context):
        config = workdir / "channels.yaml"
        config.write_text(self.config(port, workdir))
        argv = [sys.executable, *context.engine_python_args, "-m", "engine", "run", "-c", str(config)]
        # --workers always: run's default (auto) depends on the machine's cores.
        argv += ["--workers", str(self.workers)]
        if self.intake_processes > 1:
            argv += ["--intake-processes", str(self.intake_processes)]
        return argv, context.engine_root, python_env()

    def versions(self, context):
        return {
            "hl7engine": f"{deps.python_package_version('hl7engine')} ({context.engine_source})",
            "Twisted": deps.python_package_version("Twisted"),
            "SQLAlchemy": deps.python_package_version("SQLAlchemy"),
            "SQLite": sqlite3.sqlite_version,
            "psycopg": deps.python_package_version("psycopg"),
        }

    def observe(self, workdir):
        try:
            with stores.probe(self.store_url(workdir)) as store:
                return {"stored": store.stored(after_id=self.setup.existing_messages)}
        except SQLAlchemyError as error:  # no store: the engine never got as far as creating it
            return {"stored": None, "store_error": str(error).splitlines()[0]}


class PythonScript(System):
    """A baseline server written as a script in bench/servers/, run by this interpreter."""

    def __init__(
        self, name: str, label: str, script: str, packages: dict[str, bool], *, needs_bench_deps: bool = False
    ):
        self.name = name
        self.label = label
        self.script = script
        self.packages = packages  # distribution -> installed in bench/.deps (True) or with the engine (False)
        self.needs_bench_deps = needs_bench_deps

    def prepare(self):
        return deps.python_baselines() if self.needs_bench_deps else None

    def command(self, port, workdir, context):
        env = python_env(deps.PYTHON_DEPS if self.needs_bench_deps else None)
        return [sys.executable, str(SERVERS / self.script), "--port", str(port)], BENCH, env

    def versions(self, context):
        return {
            name: deps.python_package_version(name, bench_local=local)
            for name, local in self.packages.items()
        }


class NodeScript(System):
    """A baseline server written as a script in bench/servers/, run by node."""

    def __init__(self, name: str, label: str, script: str, package: str, known_issue: str = ""):
        self.name = name
        self.label = label
        self.script = script
        self.package = package
        self.known_issue = known_issue

    def prepare(self):
        return deps.node_baselines()

    def command(self, port, workdir, context):
        return ["node", str(SERVERS / self.script), "--port", str(port)], BENCH, dict(os.environ)

    def versions(self, context):
        return {self.package: deps.node_package_version(self.package)}


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        Engine("engine", "hl7engine (durability: process)", "process"),
        Engine("engine-power-loss", "hl7engine (durability: power_loss)", "power_loss"),
        Engine("engine-encrypted", "hl7engine (process, encryption at rest)", "process", encrypted=True),
        Engine("engine-w1", "hl7engine (process, --workers 1)", "process", workers=1),
        Engine("engine-i2", "hl7engine (process, --intake-processes 2)", "process", intake_processes=2),
        PythonScript("python-hl7", "python-hl7 asyncio server", "python_hl7.py", {"hl7": False}),
        PythonScript(
            "txhl7",
            "txHL7 (Twisted)",
            "txhl7_server.py",
            {"txHL7": True, "Twisted": False, "hl7": False},
            needs_bench_deps=True,
        ),
        NodeScript("simple-hl7", "simple-hl7 (Node.js)", "simple_hl7.js", "simple-hl7"),
        NodeScript(
            "node-hl7-server",
            "node-hl7-server (Node.js)",
            "node_hl7_server.js",
            "node-hl7-server",
            known_issue=(
                "it never clears a connection's receive buffer, so the n-th message on a kept-open"
                " connection is answered with n ACKs (every earlier message parsed again), the first of"
                " them for message 1"
            ),
        ),
        PythonScript("ceiling", "bare asyncio framer, fixed ACK (ceiling)", "ceiling.py", {}),
    ]
}
