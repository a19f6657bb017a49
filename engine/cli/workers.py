"""Worker processes: ``hl7engine run --workers N`` supervising its children, and a child's tie to its parent.

The main process keeps the roles that take messages in and process them (intake, processing,
jobs) and starts N children with the delivery role (``python -m engine run --role delivery``),
and K - 1 extra intake processes (``--role intake``) that accept on the same ports (SO_REUSEPORT)
and store what they take for the main process to process. The processes share the work through
leases in the store and wake one another (``process_sharing``), as the nodes of a cluster do.
The ``Supervisor`` logs what each child writes with its name in front, restarts a child that
died unexpectedly (with backoff), forwards SIGHUP (reload) and, when the engine stops, stops
them: SIGTERM, then SIGKILL after the shutdown timeout. A child follows its parent: the kernel
sends it SIGTERM when the parent dies (``PR_SET_PDEATHSIG``) and it checks its parent's pid too.
A child says it is ready (its signal handlers set) on a pipe of its own, ``READY_FD``: a SIGHUP
meant for a child still starting waits for that, as it would end the child otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet import defer, error, protocol, task
from twisted.logger import Logger

from engine.configengine import ClusterSettings

__all__ = [
    "PARENT_ENV",
    "RESTART_FIRST_SECONDS",
    "RESTART_MAX_SECONDS",
    "ProcessPlan",
    "Supervisor",
    "auto_workers",
    "follow_parent",
    "plan_processes",
    "process_sharing",
    "tell_parent_ready",
]

log = Logger()

#: Environment variable naming the supervisor's pid to its children.
PARENT_ENV = "HL7ENGINE_SUPERVISOR_PID"
#: A child that died unexpectedly is started again after this, doubled at each death in a row ...
RESTART_FIRST_SECONDS = 1.0
#: ... up to this; a child that ran longer than this starts the count again.
RESTART_MAX_SECONDS = 30.0
#: How often a child checks that its parent is still the supervisor (where PR_SET_PDEATHSIG is missing).
PARENT_CHECK_SECONDS = 1.0
#: The child's end of the pipe on which it tells its supervisor it is ready.
READY_FD = 3
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessPlan:
    """Which processes ``hl7engine run`` starts: the main one's roles, and its children by role."""

    main_roles: frozenset[str]
    children: tuple[str, ...]  # the role of each child, e.g. ("delivery",)
    reuse_port: bool  # several intake processes share the listeners' ports


def plan_processes(workers: int, intake_processes: int, all_roles: frozenset[str]) -> ProcessPlan:
    """The processes of ``workers`` delivery children and ``intake_processes`` intake processes.

    The main process is one of the intake processes; with workers it leaves delivery to them.
    """
    if workers < 0 or intake_processes < 1:
        raise ValueError("--workers must be 0 or more and --intake-processes 1 or more")
    return ProcessPlan(
        main_roles=all_roles - {"delivery"} if workers else all_roles,
        children=("delivery",) * workers + ("intake",) * (intake_processes - 1),
        reuse_port=intake_processes > 1,
    )


def auto_workers(cores: int, queues: int) -> int:
    """What ``--workers auto`` means on a machine with ``cores`` for a config with ``queues`` destinations.

    A worker a core but the main process's, and no more than there are queues to share: 0 on one
    core, 1 on two. On two cores one worker measured best once the record had a SQLite file of its
    own (docs/scaleout.md, "Figures, and what ``--workers auto`` means").
    """
    return 0 if cores <= 1 else min(cores - 1, queues)


def process_sharing(
    cluster: ClusterSettings | None, *, child: bool, poll_seconds: float | None = None
) -> ClusterSettings:
    """How a process of ``hl7engine run`` with children shares the store: its leases and wake-ups.

    ``cluster`` (engine.cluster) when set, so the processes are nodes of the cluster; else this
    machine's name, leases of the default length and wake-ups on 127.0.0.1. A ``child`` hears
    wake-ups on any free port (the main process keeps engine.cluster's ``wake_port``).
    ``poll_seconds``: how often an idle process looks at the store anyway, instead of the setting's.
    """
    sharing = cluster or ClusterSettings()
    update = {"wake_port": 0} if child else {}
    if poll_seconds is not None:
        update["poll_seconds"] = poll_seconds
    return sharing.model_copy(update=update)


class _Child(protocol.ProcessProtocol):
    """One child: what it writes goes to our stderr, each line with its name in front."""

    def __init__(self, name: str, out, ended: Callable[[_Child, object], None]):
        self.name = name
        self._out = out
        self._ended = ended
        self._partial: dict[int, bytes] = {}
        self.started_at = 0.0
        self.ready = False
        self.signals_held: list[int] = []  # SIGHUPs sent while it was starting

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD:
            self.ready = True
            for signum in self.signals_held:
                self.send(signum)
            self.signals_held.clear()
            return
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._write(lines)

    def processEnded(self, reason) -> None:
        self._write([rest for rest in self._partial.values() if rest])
        self._partial.clear()
        self._ended(self, reason)

    def _write(self, lines: Sequence[bytes]) -> None:
        prefix = f"[{self.name}] ".encode()
        for line in lines:
            self._out.write(prefix + line + b"\n")
        if lines:
            self._out.flush()

    @property
    def pid(self) -> int | None:
        return self.transport.pid if self.transport is not None else None

    def send(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except error.ProcessExitedAlready:
            pass


class Supervisor:
    """Starts the children, restarts those that die unexpectedly, forwards signals, stops them all."""

    def __init__(
        self,
        reactor,
        command: Callable[[str], list[str]],
        roles: Sequence[str],
        *,
        stop_timeout: float,
        out=None,
    ):
        """``command(role)``: the argv of a child with ``role``; one child per item of ``roles``."""
        self.reactor = reactor
        self.command = command
        self.roles = tuple(roles)
        self.stop_timeout = stop_timeout
        self._out = out if out is not None else sys.stderr.buffer
        self._children: dict[str, _Child] = {}
        self._restarts: dict[str, object] = {}
        self._delays: dict[str, float] = {}
        self._gone: dict[str, defer.Deferred] = {}
        self.stopping = False

    @property
    def pids(self) -> dict[str, int]:
        """The pid of each running child, by name (``delivery-1``)."""
        return {name: child.pid for name, child in self._children.items() if child.pid is not None}

    def start(self) -> None:
        for index, role in enumerate(self.roles, start=1):
            self._spawn(f"{role}-{index}", role)

    def _spawn(self, name: str, role: str) -> None:
        self._restarts.pop(name, None)
        child = _Child(name, self._out, self._ended)
        child.started_at = self.reactor.seconds()
        argv = self.command(role)
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        fds = {0: "w", 1: "r", 2: "r", READY_FD: "r"}
        self.reactor.spawnProcess(child, argv[0], argv, env=env, childFDs=fds)
        self._children[name] = child
        log.info("started {name} (pid {pid})", name=name, pid=child.pid)

    def _ended(self, child: _Child, reason) -> None:
        name = child.name
        if self._children.get(name) is child:
            del self._children[name]
        gone = self._gone.pop(name, None)
        if gone is not None:
            gone.callback(None)
        if self.stopping:
            return
        ran = self.reactor.seconds() - child.started_at
        delay = RESTART_FIRST_SECONDS if ran >= RESTART_MAX_SECONDS else self._delays.get(name, 0.0)
        delay = min(RESTART_MAX_SECONDS, max(RESTART_FIRST_SECONDS, delay))
        self._delays[name] = delay * 2
        log.warn(
            "{name} ended unexpectedly ({reason}); starting it again in {delay:.0f} s",
            name=name,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        role = name.rsplit("-", 1)[0]
        self._restarts[name] = self.reactor.callLater(delay, self._spawn, name, role)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running child (SIGHUP: reload the config too).

        A SIGHUP waits until the child is ready; any other signal goes at once.
        """
        for child in list(self._children.values()):
            if signum == signal.SIGHUP and not child.ready:
                child.signals_held.append(signum)
            else:
                child.send(signum)

    def stop(self) -> defer.Deferred:
        """SIGTERM to every child, SIGKILL to any left after ``stop_timeout``; fires once all ended."""
        self.stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if not self._children:
            return defer.succeed(None)
        for name in self._children:
            self._gone[name] = defer.Deferred()
        waiting = defer.gatherResults(list(self._gone.values()))
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(self.stop_timeout, self._kill_remaining)

        def done(_):
            if killer.active():
                killer.cancel()

        return waiting.addCallback(done)

    def _kill_remaining(self) -> None:
        for name in self._children:
            log.warn("{name} did not stop within the shutdown timeout; killing it", name=name)
        self.signal_all(signal.SIGKILL)


def follow_parent(reactor, stop: Callable[[], None]) -> task.LoopingCall | None:
    """In a child: stop when the supervisor dies (SIGTERM from the kernel, and a check of the parent's pid).

    None when this process was not started by a supervisor.
    """
    expected = os.environ.get(PARENT_ENV)
    if not expected:
        return None
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def check() -> None:
        # Also covers a parent that died before the prctl above: we were then adopted by another.
        if os.getppid() != int(expected):
            log.warn("the supervising process {pid} is gone; stopping", pid=expected)
            checker.stop()
            stop()

    checker = task.LoopingCall(check)
    checker.clock = reactor
    checker.start(PARENT_CHECK_SECONDS, now=True)
    return checker


def tell_parent_ready() -> None:
    """In a child, once its signal handlers are set: tell the supervisor (nothing without one)."""
    if not os.environ.get(PARENT_ENV):
        return
    try:
        os.write(READY_FD, b"ready\n")
        os.close(READY_FD)
    except OSError:  # started by hand with the variable set, without the pipe
        pass
