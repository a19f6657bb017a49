"""The ``hl7engine`` command group and what its commands share: loading the config, the store, the pid file.

Click is the CLI toolkit (sub-commands, typed options, help, progress bars).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from engine.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "PID_FILE",
    "load_config_or_exit",
    "main",
    "megabytes",
    "message_repository",
    "read_sources",
    "running_engine",
    "store_engine",
]


DEFAULT_CONFIG = "channels.yaml"


def load_config_or_exit(config_path: str):
    from engine.config import load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{config_path}: {len(exc.problems)} problem(s); nothing started", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="hl7engine")
def main() -> None:
    """hl7engine: an HL7 v2 integration engine."""


PID_FILE = "hl7engine.pid"


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
    """(the config or None, a SQLAlchemy engine on its store): ``db`` instead of the config's database.

    The config is read for its keys (and settings) even with ``db``, when the file exists.
    """
    from engine.store.cipher import CLEAR
    from engine.store.db import create_engine_for

    config = load_config_or_exit(config_path) if db is None or Path(config_path).exists() else None
    cipher = CLEAR if config is None else config.engine.store.cipher()
    return config, create_engine_for(db or config.store_url, cipher=cipher)


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
