"""The ``hl7engine`` command group and what its commands share: loading the config, the store, the pid file.

Click is the CLI toolkit (sub-commands, typed options, help, progress bars). The group imports a
command's module only when that command runs (``EngineGroup``), so that ``hl7engine messages list``
does not pay for Twisted or the channels. A user's mistake ends in one line on stderr and a
non-zero exit: 2 for a usage error (click's own), 1 for what is not found or failed, i.e. an
``EngineError`` raised by any command; ``hl7engine --debug ...`` shows its traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click

from engine.errors import ConfigError, EngineError, StoreError

__all__ = [
    "DEFAULT_CONFIG",
    "PID_FILE",
    "ROW_ID",
    "EngineGroup",
    "config_option",
    "echo_json",
    "load_config_or_exit",
    "load_store_side_or_exit",
    "main",
    "megabytes",
    "message_repository",
    "progress",
    "read_sources",
    "require_channel",
    "running_engine",
    "store_engine",
    "store_reads",
]


DEFAULT_CONFIG = "channels.yaml"
PID_FILE = "hl7engine.pid"
#: A row id or a count of rows: what the store's 64-bit integers hold (a larger one fails in the driver).
ROW_ID = click.IntRange(1, 2**63 - 1)
_DEBUG = "hl7engine.debug"


class EngineGroup(click.Group):
    """The root group: commands imported on first use, and an EngineError told in one line.

    ``lazy`` maps a command name to ``"module:attribute"``; commands added with ``@main.command()``
    work as well.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = {}

    def add_lazy(self, commands: Mapping[str, str]) -> None:
        """Register commands by where they are defined, imported when first looked up."""
        self.lazy.update(commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            if ctx.meta.get(_DEBUG):
                raise
            _tell_config_problems(error, "")
            ctx.exit(2)
        except EngineError as error:
            if ctx.meta.get(_DEBUG):
                raise
            click.echo(f"hl7engine: {error}", err=True)
            ctx.exit(1)


def _set_debug(ctx: click.Context, _param, value: bool) -> bool:
    ctx.meta[_DEBUG] = value
    return value


@click.group(cls=EngineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hl7engine")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show the traceback of an error instead of its one line.",
)
def main() -> None:
    """hl7engine: an HL7 v2 integration engine.

    Exit status: 0 done, 1 not found or failed, 2 a usage error (a bad option or value).
    """


def config_option(func):
    """``-c/--config``: the channels.yaml a command works on."""
    return click.option(
        "-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="The channels.yaml."
    )(func)


def _tell_config_problems(error: ConfigError, config_path: str) -> None:
    for problem in error.problems:
        click.echo(str(problem), err=True)
    where = f"{config_path}: " if config_path else ""
    click.echo(f"{where}{len(error.problems)} problem(s); nothing done", err=True)


def load_config_or_exit(config_path: str):
    """The whole config (channels built, ``python:`` modules imported); every problem printed, exit 2."""
    from engine.config import load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        _tell_config_problems(exc, config_path)
        sys.exit(2)


def load_store_side_or_exit(config_path: str, *, views: bool = False):
    """The config's engine block and names only (``engine.configstore``): for commands on the store.

    With ``views``, (that, the channels' views) as ``channel list`` shows them.
    """
    from engine.configstore import load_channel_views, load_store_side

    try:
        return load_channel_views(config_path) if views else load_store_side(config_path)
    except ConfigError as exc:
        _tell_config_problems(exc, config_path)
        sys.exit(2)


def require_channel(channel: str, known: Iterable[str]) -> None:
    """A ``--channel`` that is none of ``known`` is a usage error naming them."""
    names = sorted(set(known))
    if channel not in names:
        text = f"no channel {channel!r}; the channels are: {', '.join(names) or '(none)'}"
        raise click.BadParameter(text, param_hint="--channel")


def read_sources(source: str):
    """(name, bytes) of a file, of every file under a directory (sorted), or of stdin for '-'."""
    if source == "-":
        yield "stdin", sys.stdin.buffer.read()
        return
    path = Path(source)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(child), child.read_bytes()
    else:
        yield str(path), path.read_bytes()


def running_engine(config) -> int | None:
    """The pid of the engine running this config (its pid file names a live process), or None."""
    try:
        pid = int((config.engine.data_dir / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def message_repository(config_path: str, db: str | None):
    """The store's message repository: the config's database (or ``db``), with the config's keys.

    The config is read for its keys even with ``db``, when the file exists.
    """
    from engine.store.messages import MessageRepository

    return MessageRepository(store_engine(config_path, db)[1])


def store_engine(config_path: str, db: str | None):
    """(the config's store side or None, a SQLAlchemy engine on an existing store): ``db`` overrides.

    The config is read for its keys (and settings) even with ``db``, when the file exists.
    StoreError when there is no store there: a missing SQLite file is not created.
    """
    config, cipher = _store_side(config_path, db)
    return config, open_store(db or config.store_url, cipher)


@contextmanager
def store_reads(config_path: str, db: str | None, repository: Callable, *, side=None) -> Iterator[tuple]:
    """(the config's store side or None, what reads the store) for a command that only reads it.

    On a plain SQLite file that is ``SQLiteReads`` (the stdlib's sqlite3: the command imports no
    SQLAlchemy); on any other store ``repository(engine)``, whose reads answer alike (a
    ``MessageRepository`` or ``ClusterRepository``). Closed at the end; StoreError as store_engine.
    ``side``: the config's store side when the command has read it already.
    """
    from engine.store.driver.sqlite_reads import SQLiteReads, sqlite_path

    config, cipher = (side, side.engine.store.cipher()) if side is not None else _store_side(config_path, db)
    url = db or config.store_url
    path = sqlite_path(url)
    if path is None:
        engine = open_store(url, cipher)
        try:
            yield config, repository(engine)
        finally:
            engine.dispose()
        return
    if not path.is_file():
        raise _no_store(path)
    reads = SQLiteReads.open(path, cipher)
    try:
        yield config, reads
    finally:
        reads.close()


def _store_side(config_path: str, db: str | None):
    """(the config's store side, or None with ``db`` and no config file; the store's cipher)."""
    from engine.store.cipher import CLEAR

    config = load_store_side_or_exit(config_path) if db is None or Path(config_path).exists() else None
    return config, CLEAR if config is None else config.engine.store.cipher()


def _no_store(path: Path) -> StoreError:
    return StoreError(f"no store at {path}: the engine creates it when it first runs (see -c and --db)")


def open_store(url: str, cipher):
    """An engine on the store at ``url``, which the engine has created; StoreError otherwise."""
    import sqlalchemy as sa

    from engine.store.db import create_engine_for, sqlite_file
    from engine.store.driver import store_errors

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:  # a file path given for --db, say
        raise StoreError(
            f"{url!r} is not a store URL: give sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    path = sqlite_file(parsed)
    if path is not None and not path.is_file():
        raise _no_store(path)
    engine = create_engine_for(url, cipher=cipher)
    with store_errors("opening the store"):
        migrated = sa.inspect(engine).has_table("messages")
    if not migrated:
        engine.dispose()
        where = path or parsed.render_as_string(hide_password=True)
        raise StoreError(f"{where} is not an hl7engine store (it has no messages table)")
    return engine


def echo_json(value) -> None:
    """One JSON document on a line of stdout, keys sorted (what ``--json`` prints)."""
    import json

    click.echo(json.dumps(value, sort_keys=True, default=str))


@contextmanager
def progress(items: Iterable, length: int, label: str, *, every_seconds: float = 1.0) -> Iterator[Iterable]:
    """Iterate ``items`` showing progress on stderr: a bar on a terminal, else a line a second.

    Without a terminal (a log, a pipe) the line says how many of ``length`` are done, so a long
    run shows it is alive; the last line is printed at the end when any was printed before.
    """
    if sys.stderr.isatty():
        with click.progressbar(items, length=length, label=label, file=sys.stderr) as bar:
            yield bar
        return
    state = {"done": 0, "shown_at": time.monotonic(), "shown": 0}

    def counted():
        for item in items:
            yield item
            state["done"] += 1
            if time.monotonic() - state["shown_at"] >= every_seconds:
                state["shown_at"], state["shown"] = time.monotonic(), state["done"]
                click.echo(f"{label}: {state['done']}/{length}", err=True)

    yield counted()
    if state["shown"] and state["shown"] != state["done"]:
        click.echo(f"{label}: {state['done']}/{length}", err=True)


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
