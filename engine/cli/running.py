"""Commands about the engine process: run, reload, check, hash-password.

Only ``run`` touches the global reactor.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from engine.cli.app import (
    DEFAULT_CONFIG,
    PID_FILE,
    echo_json,
    load_config_or_exit,
    running_engine,
)


def _workers(value: str) -> int | None:
    """``--workers``: a whole number of 0 or more, or ``auto`` (None: ``auto_workers`` decides)."""
    if value == "auto":
        return None
    if not value.isdigit():
        raise click.BadParameter(f"{value!r} is neither a whole number of 0 or more nor auto")
    return int(value)


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The channels.yaml to run.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default="info",
    show_default=True,
    help="Debug level may log message content; never use it on patient data you may not see.",
)
@click.option(
    "--workers",
    metavar="N|auto",
    default="auto",
    show_default=True,
    callback=lambda ctx, param, value: _workers(value),
    help="Delivery worker processes beside this one (0: deliver here; auto: 0 on 2 cores or fewer,"
    " else one a core but one, at most one a destination; see docs/scaleout.md).",
)
@click.option(
    "--intake-processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes accepting on the listeners' ports (SO_REUSEPORT), this one included.",
)
@click.option("--role", type=click.Choice(["delivery", "intake"]), default=None, hidden=True)
# Tests: how often the processes of --workers look at the store when no wake-up came.
@click.option("--poll-seconds", type=click.FloatRange(min=0, min_open=True), default=None, hidden=True)
def run(
    config_path: str,
    log_level: str,
    workers: int | None,
    intake_processes: int,
    role: str | None,
    poll_seconds: float | None,
) -> None:
    """Start the listeners and channels of a config; stop cleanly on SIGINT/SIGTERM.

    With --workers the destinations are served by child processes this one supervises.
    """
    from twisted.internet import defer, reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    config = load_config_or_exit(config_path)
    # Before anything is written: a second engine on this data folder stops here.
    lock = hold_data_folder(config.engine.data_dir) if role is None else None  # noqa: F841  (held)
    from engine.cli.workers import (
        Supervisor,
        auto_workers,
        follow_parent,
        plan_processes,
        process_sharing,
        tell_parent_ready,
    )
    from engine.service import Engine
    from engine.serviceparts import ALL_ROLES

    supervisor = None
    if role is None:
        if workers is None:
            queues = sum(len(channel.destinations) for channel in config.channels if channel.enabled)
            workers = auto_workers(os.cpu_count() or 1, queues)
        try:
            plan = plan_processes(workers, intake_processes, ALL_ROLES)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        roles, reuse_port = plan.main_roles, plan.reuse_port
        if plan.children:
            supervisor = Supervisor(
                reactor,
                lambda child_role: _child_command(config_path, log_level, child_role, poll_seconds),
                plan.children,
                stop_timeout=config.engine.shutdown_timeout_seconds,
            )
    else:
        roles, reuse_port = frozenset({role}), role == "intake"
    extra_intake = role == "intake"
    # Processes of one tree share the work through leases in the store, and wake one another.
    sharing = (
        process_sharing(config.engine.cluster, child=role is not None, poll_seconds=poll_seconds)
        if role is not None or supervisor is not None
        else None
    )
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )

    engine = Engine(
        config, reactor, roles=roles, reuse_port=reuse_port, extra_intake=extra_intake, sharing=sharing
    )
    failed: list[BaseException] = []

    def start() -> None:
        stop_once = stop_on_signals(reactor)
        if role is not None:
            # A child stops when its supervisor says so (a Ctrl-C reaches the supervisor), or dies.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            follow_parent(reactor, stop_once)
            tell_parent_ready()
        try:
            engine.startService()
        except Exception as exc:  # a port in use or an unreachable database: say so and stop
            failed.append(exc)
            click.echo(f"hl7engine: cannot start: {exc}", err=True)
            stop_once()
            return
        if supervisor is not None:  # once the store is upgraded and the ports bound
            supervisor.start()

    def shutdown() -> defer.Deferred:
        # The children stop after this process's listeners closed and its channels finished.
        if supervisor is not None:
            supervisor.stopping = True
        d = engine.stopService() if engine.running else defer.succeed(None)
        if supervisor is not None:
            d.addBoth(lambda _: supervisor.stop())
        return d

    pid_file = config.engine.data_dir / PID_FILE
    if role is None:  # the pid file names the main process: `hl7engine reload` signals it
        pid_file.write_text(f"{os.getpid()}\n")
    reload_on_sighup(reactor, engine, supervisor)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    try:
        reactor.run()
    finally:
        if role is None:
            pid_file.unlink(missing_ok=True)
    if failed:
        sys.exit(1)


def stop_on_signals(reactor) -> Callable[[], None]:
    """SIGINT and SIGTERM stop the reactor, once; returns that stop, for the caller's own reasons.

    Installed whatever the process inherited: a shell script's background job starts with SIGINT
    ignored, and Twisted then leaves it so. A second signal (a supervisor and a shell both
    forwarding one) does not stop twice.
    """
    stopping: list[bool] = []

    def stop_once() -> None:
        if not stopping:
            stopping.append(True)
            reactor.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: reactor.callFromThread(stop_once))
    return stop_once


LOCK_FILE = "hl7engine.lock"


def hold_data_folder(data_dir: Path) -> int:
    """Lock ``data_dir`` for this engine (its file descriptor, held until the process ends); exit 1 if taken.

    One engine per data folder: a second one would share the store and overwrite the first one's
    pid file. The lock is released by the kernel however the process ends, kill -9 included, and
    worker processes do not inherit it (Python's descriptors are not inheritable).
    """
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the store goes here too
        descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # a file in its place, no permission, a read-only file system
        click.echo(f"hl7engine: cannot use the data folder {data_dir}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode("ascii", errors="replace").strip() or "?"
        os.close(descriptor)
        click.echo(
            f"hl7engine: another engine (pid {holder}) is running on the data folder {data_dir};"
            " stop it first, or give this config another engine.data_dir",
            err=True,
        )
        sys.exit(1)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
    return descriptor


def _child_command(config_path: str, log_level: str, role: str, poll_seconds: float | None) -> list[str]:
    """The argv of a worker process with ``role``, on the same config file."""
    config = os.path.abspath(config_path)
    argv = [sys.executable, "-m", "engine", "run", "-c", config, "--log-level", log_level, "--role", role]
    return argv + ([] if poll_seconds is None else ["--poll-seconds", str(poll_seconds)])


def reload_on_sighup(reactor, engine, supervisor=None) -> None:
    """SIGHUP reloads the engine's config file: only what changed is restarted; a bad file changes nothing.

    With a ``supervisor``, its worker processes are told to reload the same file too.
    """
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(_reload, engine, supervisor))


def _reload(engine, supervisor) -> None:
    if supervisor is not None:
        supervisor.signal_all(signal.SIGHUP)  # each child reloads the same file
    d = engine.reload_from_file()
    d.addErrback(lambda failure: None)  # already logged, problem by problem; the old config keeps running


@click.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def reload(config_path: str) -> None:
    """Ask the running engine to reload its config (checked here first; every problem is printed)."""
    config = load_config_or_exit(config_path)
    pid = running_engine(config)
    if pid is None:
        click.echo(f"no running engine found ({config.engine.data_dir / PID_FILE})", err=True)
        sys.exit(1)
    os.kill(pid, signal.SIGHUP)
    click.echo(f"asked engine {pid} to reload {config_path}")


@click.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-c", "--config", "config_path", default=None, help=f"The channels.yaml (default: {DEFAULT_CONFIG})."
)
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object: ok, counts, problems.")
def check(config_file: str | None, config_path: str | None, as_json: bool) -> None:
    """Validate a config (CONFIG_FILE or -c); print every problem with its YAML path.

    Exit status: 0 valid, 2 any problem.
    """
    from engine.config import load_config
    from engine.errors import ConfigError

    if config_file and config_path and config_file != config_path:
        raise click.UsageError("give the config once: as CONFIG_FILE or with -c")
    path = config_file or config_path or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as error:
        if not as_json:
            raise
        problems = [{"path": p.path, "line": p.line, "message": p.message} for p in error.problems]
        echo_json({"config": path, "ok": False, "problems": problems})
        sys.exit(2)
    from engine.configcheck import config_warnings

    warnings = config_warnings(config)  # likely mistakes: printed, never fatal (docs/try.md)
    if as_json:
        counts = {"listeners": len(config.listeners), "channels": len(config.channels)}
        found = [str(warning) for warning in warnings]
        echo_json({"config": path, "ok": True, "problems": [], "warnings": found, **counts})
    else:
        click.echo(f"{path}: OK ({len(config.listeners)} listener(s), {len(config.channels)} channel(s))")
        for warning in warnings:
            click.echo(str(warning), err=True)


@click.command("hash-password")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="PBKDF2 iterations (default: the engine's, 600000).",
)
def hash_password(iterations: int | None) -> None:
    """Ask for a password (twice, not echoed) and print its hash for engine.http.users."""
    from engine.web.passwords import DEFAULT_ITERATIONS
    from engine.web.passwords import hash_password as make_hash

    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    click.echo(make_hash(password, iterations=iterations or DEFAULT_ITERATIONS))
