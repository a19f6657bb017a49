"""``hl7engine run --workers``: delivery in a supervised child process, and the roles of an engine process.

The command runs as a user runs it (a real process tree on loopback, SQLite); the roles are
checked on the Engine itself with real sockets.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from engine.cli.workers import Supervisor, plan_processes
from engine.config import load_config
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.listeners.mllp import MLLPListenerService
from engine.service import ALL_ROLES, Engine
from tests.fakes.harness import free_port, in_thread, statuses
from tests.fakes.partner import RecordingPartner
from tests.fakes.process import ENGINE, adt, wait_for_port

WAIT_SECONDS = 30  # every wait below gives up after this


def _config(folder: Path, port: int, partner_port: int, *, respond: str = "after_store") -> Path:
    path = folder / "channels.yaml"
    path.write_text(
        f"""
engine:
  data_dir: data
  shutdown_timeout_seconds: 5
listeners:
  - name: main
    endpoint: "tcp:{port}:interface=127.0.0.1"
channels:
  - name: out
    source: main
    respond: {respond}
    accept:
      types: ["*"]
    destinations:
      - {{name: partner, type: mllp, host: 127.0.0.1, port: {partner_port}}}
"""
    )
    return path


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            continue
        # The field after the parenthesised command name: state, then the parent's pid.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def _running(config: Path, port: int, *options: str):
    """`hl7engine run --workers 1` (or ``options``) on ``config`` once it listens and has its child.

    SIGTERM on the way out; afterwards the process's ``log`` attribute holds what it wrote on stderr.
    """
    process = subprocess.Popen(
        [*ENGINE, "run", "-c", str(config), *(options or ("--workers", "1"))],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        cwd=config.parent,
    )
    try:
        wait_for_port(port, process)
        _wait(lambda: len(_children(process.pid)) == 1, "one child process")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        process.log = stderr.decode()


@pytest.fixture
def partner():
    """A recording MLLP partner for the engine's destination, closed after the test."""
    recorder = RecordingPartner()
    yield recorder
    recorder.close()


ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def _sockets_on(pid: int, port: int, state: str = ESTABLISHED) -> int:
    """How many TCP sockets on local ``port`` in ``state`` process ``pid`` has open (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, inode = int(fields[1].split(":")[1], 16), fields[9]
        count += local_port == port and fields[3] == state and inode in inodes
    return count


def _send(port: int, numbers) -> None:
    with MLLPClient("127.0.0.1", port, timeout=10) as client:
        for n in numbers:
            assert parse_reply(client.request(adt(n))).code == "AA"


def test_workers_1_delivers_in_order_survives_a_killed_child_and_stops_cleanly(tmp_path, partner):
    """A delivery child serves the destination in order; SIGKILLed it comes back; SIGTERM ends all."""
    port = free_port()
    config = _config(tmp_path, port, partner.port)
    with _running(config, port) as process:
        ((child, cmdline),) = _children(process.pid).items()
        assert "--role delivery" in cmdline
        _send(port, range(1, 31))
        expected = [f"C{n:06d}" for n in range(1, 31)]
        _wait(lambda: partner.count() >= 30, "30 messages delivered")
        assert partner.received == expected

        os.kill(child, signal.SIGKILL)
        _wait(lambda: set(_children(process.pid)) - {child}, "a new child after the SIGKILL")
        _send(port, range(31, 61))
        expected += [f"C{n:06d}" for n in range(31, 61)]
        _wait(lambda: partner.count() >= 60, "60 messages delivered")
        assert partner.received == expected
        children = list(_children(process.pid))
    log = process.log
    assert process.returncode == 0, log
    assert "[delivery-1] " in log  # the child's lines, named
    assert "delivery-1 ended unexpectedly" in log
    lines = log.splitlines()
    closed = next(i for i, line in enumerate(lines) if f"Port {port} Closed" in line)
    child_ended = [
        i for i, line in enumerate(lines) if "[delivery-1] " in line and "Main loop terminated" in line
    ]
    assert child_ended and closed < child_ended[-1]  # the child stopped after the listener closed
    assert children and not any(_alive(pid) for pid in children)


def test_a_child_stops_when_its_supervisor_is_killed(tmp_path, partner):
    """SIGKILL of the main process: its delivery child follows (PR_SET_PDEATHSIG, parent check)."""
    port = free_port()
    config = _config(tmp_path, port, partner.port)
    with _running(config, port) as process:
        (child,) = _children(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        _wait(lambda: not _alive(child), "the child gone after its parent")


def test_sighup_reaches_the_children_and_more_than_one_worker_is_refused(tmp_path, partner):
    """`hl7engine reload` (SIGHUP to the main pid) reloads the children too; --workers 2 is refused."""
    port = free_port()
    config = _config(tmp_path, port, partner.port)
    refused = subprocess.run(
        [*ENGINE, "run", "-c", str(config), "--workers", "2"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "leases in the store" in refused.stderr
    with _running(config, port) as process:
        reloaded = subprocess.run(
            [*ENGINE, "reload", "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert reloaded.returncode == 0, reloaded.stderr
        assert str(process.pid) in reloaded.stdout  # the pid file names the main process
        time.sleep(1)  # both log the reload within this
    log = process.log
    assert process.returncode == 0, log
    reloads = [line for line in log.splitlines() if "config reloaded" in line]
    assert len(reloads) == 2 and sum("[delivery-1] " in line for line in reloads) == 1, log


def test_after_processing_is_answered_from_the_store_when_a_child_delivers(tmp_path, partner):
    """respond: after_processing with delivery in the child: the sender gets AA once the partner took it."""
    port = free_port()
    config = _config(tmp_path, port, partner.port, respond="after_processing")
    with _running(config, port) as process, MLLPClient("127.0.0.1", port, timeout=20) as client:
        for n in range(1, 6):
            assert parse_reply(client.request(adt(n))).code == "AA"
            # Answered after the partner had it: the answer waited for the delivery.
            assert partner.count() == n
    assert process.returncode == 0, process.log


@pytest_twisted.inlineCallbacks
def test_a_delivery_only_engine_binds_no_port_and_serves_no_web(tmp_path):
    """roles {"delivery"}: no listener, no web server, and its destinations do start."""
    port, web_port = free_port(), free_port()
    config = _config(tmp_path, port, free_port())
    config.write_text(
        config.read_text().replace(
            "  shutdown_timeout_seconds: 5\n",
            f"  shutdown_timeout_seconds: 5\n  http:\n    endpoint: tcp:{web_port}:interface=127.0.0.1\n",
        )
    )
    engine = Engine(load_config(config), reactor, roles={"delivery"})
    engine.startService()
    try:
        assert engine.listeners == {} and engine.web is None and engine.pruner is None
        assert set(engine.channels["out"].dispatchers) == {"partner"}
        for taken in (port, web_port):
            # Nothing listens: a connection is refused.
            refused = yield _connect_fails(taken)
            assert refused
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_an_intake_and_processing_engine_starts_no_destination(tmp_path, partner):
    """roles {"intake", "processing"}: the listener takes messages, no destination is built or started."""
    config = _config(tmp_path, 0, partner.port)
    engine = Engine(load_config(config), reactor, roles={"intake", "processing"})
    engine.startService()
    try:
        channel = engine.channels["out"]
        assert channel.dispatchers == {} and channel.queue_keys == ("queue:out/partner",)
        listener = engine.listeners["main"]
        assert isinstance(listener, MLLPListenerService)
        yield in_thread(_send, listener.port, range(1, 4))
        yield in_thread(time.sleep, 0.5)
        assert partner.count() == 0  # queued in the store for a delivery process, never sent from here
        stored = yield statuses(engine)
        assert stored == {f"C{n:06d}": "QUEUED" for n in range(1, 4)}
    finally:
        yield engine.stopService()


def _connect_fails(port: int):
    d = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(Factory.forProtocol(Protocol))

    def connected(protocol):
        protocol.transport.loseConnection()
        return False

    return d.addCallbacks(connected, lambda failure: True)


def test_two_intake_processes_share_the_port_and_every_message_is_processed(tmp_path, partner):
    """--intake-processes 2: both processes accept on the port; what the extra one stores is delivered too."""
    port = free_port()
    config = _config(tmp_path, port, partner.port)
    with _running(config, port, "--workers", "0", "--intake-processes", "2") as process:
        ((child, cmdline),) = _children(process.pid).items()
        assert "--role intake" in cmdline
        _wait(lambda: _sockets_on(child, port, LISTEN) == 1, "the extra process listening")
        clients = [MLLPClient("127.0.0.1", port, timeout=10) for _ in range(16)]
        try:
            for n, client in enumerate(clients, start=1):
                assert parse_reply(client.request(adt(n))).code == "AA"
            # Connections the kernel spread over both processes: 2 * 2**-16 that it did not.
            assert _sockets_on(process.pid, port) > 0 and _sockets_on(child, port) > 0
        finally:
            for client in clients:
                client.close()
        _wait(lambda: partner.count() >= 16, "16 messages delivered")
        assert sorted(partner.received) == [f"C{n:06d}" for n in range(1, 17)]
    assert process.returncode == 0, process.log


def test_the_process_plan_of_workers_and_intake_processes():
    """Which roles the main process keeps, which children it starts, and when leases would be needed."""
    alone = plan_processes(0, 1, ALL_ROLES)
    assert (alone.main_roles, alone.children, alone.reuse_port, alone.shared_roles) == (
        ALL_ROLES,
        (),
        False,
        False,
    )
    split = plan_processes(1, 2, ALL_ROLES)
    assert split.main_roles == {"intake", "processing", "jobs"}
    assert (split.children, split.reuse_port, split.shared_roles) == (("delivery", "intake"), True, False)
    assert plan_processes(2, 1, ALL_ROLES).shared_roles  # two processes would want each queue
    with pytest.raises(ValueError):
        plan_processes(0, 0, ALL_ROLES)


# A child that will not stop on SIGTERM: it says so on stderr and sleeps.
_STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring SIGTERM', file=sys.stderr, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest_twisted.inlineCallbacks
def test_the_supervisor_kills_a_child_that_ignores_sigterm_after_the_timeout():
    """stop(): SIGTERM first, SIGKILL once stop_timeout passed; the child's lines carry its name."""
    out = io.BytesIO()
    supervisor = Supervisor(
        reactor, lambda role: [sys.executable, "-c", _STUBBORN], ["delivery"], stop_timeout=1.0, out=out
    )
    supervisor.start()
    (pid,) = supervisor.pids.values()
    for _ in range(200):  # until the child has set its handler
        if b"ignoring SIGTERM" in out.getvalue():
            break
        yield in_thread(time.sleep, 0.05)
    assert out.getvalue() == b"[delivery-1] ignoring SIGTERM\n"
    started = time.monotonic()
    yield supervisor.stop()
    assert 1.0 <= time.monotonic() - started < 10
    assert not _alive(pid) and supervisor.pids == {}
