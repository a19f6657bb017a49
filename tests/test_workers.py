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
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from engine.channels.leasing import StoreLeases
from engine.cli.workers import Supervisor, auto_workers, plan_processes, process_sharing
from engine.config import load_config
from engine.configengine import ClusterSettings
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.listeners.mllp import MLLPListenerService
from engine.service import Engine
from engine.serviceparts import ALL_ROLES
from engine.store.cluster import ClusterRepository
from engine.store.db import create_engine_for
from engine.store.reads import NodeView
from tests.fakes.harness import free_port, in_thread, statuses
from tests.fakes.partner import RecordingPartner
from tests.fakes.process import ENGINE, adt, wait_for_port

WAIT_SECONDS = 30  # every wait below gives up after this


def _config(folder: Path, port: int, *partner_ports: int, respond: str = "after_store") -> Path:
    """One listener, channel ``out`` with an mllp destination per partner port (``partner``, ``b``, ...)."""
    names = ["partner", "b", "c"]
    destinations = "".join(
        f"      - {{name: {name}, type: mllp, host: 127.0.0.1, port: {partner_port}}}\n"
        for name, partner_port in zip(names, partner_ports, strict=False)
    )
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
{destinations}"""
    )
    return path


def _nodes(config: Path) -> list[NodeView]:
    """The engine processes the store of ``config`` knows, with their leases."""
    engine = create_engine_for(load_config(config).store_url)
    try:
        return ClusterRepository(engine).nodes()
    finally:
        engine.dispose()


def _holders(config: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    """The leases held now (not expired), by key: the holding process's pid and roles (from the store)."""
    found = _nodes(config)
    return {lease.key: (node.pid, node.roles) for node in found for lease in node.leases if not lease.expired}


def _known_to(config: Path, pid: int) -> bool:
    """Whether process ``pid`` read the live processes since the last one started (its peers for wake-ups).

    A process reads them at each lease round, right after its heartbeat: a heartbeat a second after
    the newest start leaves room for that start's commit.
    """
    found = [node for node in _nodes(config) if node.stopped_at is None]
    newest = max(node.started_at for node in found)
    return any(node.pid == pid and node.heartbeat_at > newest + timedelta(seconds=1) for node in found)


def _held_by(config: Path, role: str) -> bool:
    """Whether every queue lease is held by a process whose only role is ``role``."""
    queues = {key: roles for key, (_, roles) in _holders(config).items() if key.startswith("queue:")}
    return bool(queues) and all(roles == (role,) for roles in queues.values())


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
def _running(config: Path, port: int, *options: str, children: int = 1):
    """`hl7engine run --workers 1` (or ``options``) on ``config`` once it listens and has its ``children``.

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
        _wait(lambda: len(_children(process.pid)) == children, f"{children} child process(es)")
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


def test_sighup_reaches_the_children(tmp_path, partner):
    """`hl7engine reload` (SIGHUP to the main pid) reloads the children too."""
    port = free_port()
    config = _config(tmp_path, port, partner.port)
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


def test_after_processing_is_answered_at_once_when_a_child_delivers(tmp_path, partner):
    """respond: after_processing, delivery in the child, idle poll 30 s: wake-ups answer within 1 s.

    The sender gets AA once the partner took the message; the child hears of the queued delivery by
    a wake-up and the main process of its settling by another (or its 50 ms outcome read), so no
    answer waits for the idle poll.
    """
    port = free_port()
    config = _config(tmp_path, port, partner.port, respond="after_processing")
    with (
        _running(config, port, "--workers", "1", "--poll-seconds", "30") as process,
        MLLPClient("127.0.0.1", port, timeout=20) as client,
    ):
        # The child claims its queue's lease once it registered, and the main process wakes it once
        # its leases' round saw it: until then the poll would deliver.
        _wait(lambda: _held_by(config, "delivery"), "the delivery child holding its queue")
        _wait(lambda: _known_to(config, process.pid), "the main process knowing its child")
        for n in range(1, 11):
            started = time.monotonic()
            assert parse_reply(client.request(adt(n))).code == "AA"
            assert time.monotonic() - started < 1.0, n
            # Answered after the partner had it: the answer waited for the delivery.
            assert partner.count() == n
    assert process.returncode == 0, process.log


def test_two_workers_split_the_queues_and_one_takes_over_a_killed_ones(tmp_path):
    """--workers 2, two destinations: one queue lease each, in order; SIGKILL of one: its queue moves.

    The other child (or the killed one's restart) holds the queue again within the lease (10 s) and
    a renewal; the destination gets every message in order, with at most one sent twice.
    """
    partners = [RecordingPartner(), RecordingPartner()]
    port = free_port()
    config = _config(tmp_path, port, *(partner.port for partner in partners))
    keys = ("queue:out/partner", "queue:out/b")
    try:
        with _running(config, port, "--workers", "2", children=2) as process:
            children = set(_children(process.pid))
            # The child registered first may claim both, and hands one over once it sees the other.
            _wait(
                lambda: {_holders(config).get(key, (0,))[0] for key in keys} == children,
                "one queue held in each child",
            )
            holders = _holders(config)
            assert holders["channel:out"][0] == process.pid  # processing stays in the main process
            _send(port, range(1, 21))
            _wait(lambda: all(partner.count() >= 20 for partner in partners), "20 messages delivered twice")
            expected = [f"C{n:06d}" for n in range(1, 21)]
            assert [partner.received for partner in partners] == [expected, expected]

            victim = holders[keys[0]][0]
            sender = threading.Thread(target=_send, args=(port, range(21, 81)))
            sender.start()
            _wait(lambda: partners[0].count() >= 25, "the second batch under way")
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            sender.join(timeout=WAIT_SECONDS)
            _wait(lambda: _holders(config).get(keys[0], (victim,))[0] != victim, "the queue taken over")
            taken_after = time.monotonic() - killed_at
            expected += [f"C{n:06d}" for n in range(21, 81)]
            _wait(lambda: len(set(partners[0].received)) >= 80, "80 distinct messages delivered")
            _wait(lambda: partners[1].count() >= 80, "80 messages delivered to the other")
        assert process.returncode == 0, process.log
    finally:
        for partner in partners:
            partner.close()
    assert taken_after < 10 + 10 / 3 + 2, taken_after  # the lease, a renewal, a restart's start
    received = partners[0].received
    assert list(dict.fromkeys(received)) == expected  # in order ...
    assert len(received) - len(expected) <= 1  # ... with at most the one in flight sent twice
    assert partners[1].received == expected  # the queue whose child lived was not disturbed


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
        assert not engine.store.ahead  # its writes of the store's file wait for intake's
        channel = engine.channels["out"]
        assert set(channel.dispatchers) == {"partner"}
        # It shares the store: leases in the store, wake-ups, and an idle look every poll_seconds.
        assert isinstance(engine.leases, StoreLeases) and engine.wakeups is not None
        assert channel.idle_poll_seconds == channel.dispatchers["partner"].idle_poll_seconds == 1.0
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
        assert channel.dispatchers == {}
        assert engine.store.ahead  # senders wait for its commits: they go first at the file's lock
        listener = engine.listeners["main"]
        assert isinstance(listener, MLLPListenerService)
        yield in_thread(_send, listener.port, range(1, 4))
        stored = {}
        for _ in range(100):  # processed once the channel's lease is claimed
            stored = yield statuses(engine)
            if set(stored.values()) == {"QUEUED"}:
                break
            yield in_thread(time.sleep, 0.05)
        assert stored == {f"C{n:06d}": "QUEUED" for n in range(1, 4)}
        assert partner.count() == 0  # queued in the store for a delivery process, never sent from here
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
    """Which roles the main process keeps and which children it starts."""
    alone = plan_processes(0, 1, ALL_ROLES)
    assert (alone.main_roles, alone.children, alone.reuse_port) == (ALL_ROLES, (), False)
    split = plan_processes(1, 2, ALL_ROLES)
    assert split.main_roles == {"intake", "processing", "jobs"}
    assert (split.children, split.reuse_port) == (("delivery", "intake"), True)
    assert plan_processes(2, 1, ALL_ROLES).children == ("delivery", "delivery")
    # auto: a worker a core but the main one, no more than the queues (one on two cores).
    assert [auto_workers(cores, 3) for cores in (1, 2, 3, 4, 8)] == [0, 1, 2, 3, 3]
    assert auto_workers(2, 0) == 0
    assert auto_workers(8, 0) == 0
    with pytest.raises(ValueError):
        plan_processes(0, 0, ALL_ROLES)


def test_the_processes_of_a_run_share_the_store_as_nodes_do():
    """process_sharing: engine.cluster's settings when set (a child on any wake port), else the defaults."""
    cluster = ClusterSettings(node="node-a", lease_seconds=30, wake_port=4012, poll_seconds=2)
    assert process_sharing(cluster, child=False) == cluster
    child = process_sharing(cluster, child=True)
    assert (child.node, child.lease_seconds, child.wake_port, child.poll_seconds) == ("node-a", 30, 0, 2)
    alone = process_sharing(None, child=False, poll_seconds=30)
    assert (alone.node, alone.lease_seconds, alone.wake_host, alone.wake_port, alone.poll_seconds) == (
        ClusterSettings().node,
        10,
        "127.0.0.1",
        0,
        30,
    )


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
