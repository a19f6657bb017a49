"""Commands about the engine process: run, reload, check, hash-password.

Only ``run`` touches the global reactor.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from engine.cli.app import (
    DEFAULT_CONFIG,
    PID_FILE,
    load_config_or_exit,
    main,
    running_engine,
)


@main.command()
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
def run(config_path: str, log_level: str) -> None:
    """Start the listeners and channels of a config; stop cleanly on SIGINT/SIGTERM."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    config = load_config_or_exit(config_path)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )

    from engine.service import Engine

    engine = Engine(config, reactor)
    failed: list[BaseException] = []

    stopping: list[bool] = []

    def stop_once() -> None:
        # A second SIGTERM (a supervisor and a shell both forwarding it) must not stop twice.
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def start() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: reactor.callFromThread(stop_once))
        try:
            engine.startService()
        except Exception as exc:  # a port in use or an unreachable database: say so and stop
            failed.append(exc)
            click.echo(f"hl7engine: cannot start: {exc}", err=True)
            stop_once()

    pid_file = config.engine.data_dir / PID_FILE
    pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # data_dir: the store goes here too
    pid_file.write_text(f"{os.getpid()}\n")
    # SIGHUP reloads channels.yaml: only what changed is restarted; a bad file changes nothing.
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(_reload, engine))
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: engine.stopService() if engine.running else None
    )
    try:
        reactor.run()
    finally:
        pid_file.unlink(missing_ok=True)
    if failed:
        sys.exit(1)


def _reload(engine) -> None:
    d = engine.reload_from_file()
    d.addErrback(lambda failure: None)  # already logged, problem by problem; the old config keeps running


@main.command()
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


@main.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def check(config_path: str) -> None:
    """Validate a config; print every problem with its YAML path and exit non-zero if any."""
    config = load_config_or_exit(config_path)
    click.echo(f"{config_path}: OK ({len(config.listeners)} listener(s), {len(config.channels)} channel(s))")


@main.command("hash-password")
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
