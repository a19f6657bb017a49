"""``hl7engine channel list|pause|resume``: the channels' counts and queues, and pausing their delivery.

A pause is written into the store: a running engine (every node of it) picks it up within a
second or two and holds the queue; messages are still received and queued.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from engine.cli.app import DEFAULT_CONFIG, load_store_side_or_exit, store_engine, store_reads


@click.group()
def channel() -> None:
    """The channels: their counts and queues (list), pausing and resuming their destinations."""


def _known(config_path: str, name: str, destination: str | None):
    """The config, exiting with status 2 when it has no such channel (or destination)."""
    config = load_store_side_or_exit(config_path)
    if name not in config.channels:
        click.echo(f"channel: no channel {name!r} in {config_path}", err=True)
        sys.exit(2)
    if destination is not None and destination not in config.channels[name]:
        click.echo(f"channel: channel {name!r} has no destination {destination!r}", err=True)
        sys.exit(2)
    return config


def _change(config_path: str, db: str | None, name: str, destination: str | None, action: str) -> None:
    import getpass

    from engine.errors import StoreError
    from engine.store.controls import ControlRepository
    from engine.store.reads import WHOLE_CHANNEL

    _known(config_path, name, destination)
    _, engine = store_engine(config_path, db)
    controls = ControlRepository(engine)
    queue = destination or WHOLE_CHANNEL
    what = f"channel {name}" + (f" destination {destination}" if destination else "")
    try:
        if action == "pause":
            changed = controls.pause(name, queue, by=f"cli:{getpass.getuser()}")
        else:
            changed = controls.resume(name, queue) is not None
    except StoreError as error:
        click.echo(f"channel {action}: {error}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    done = "paused" if action == "pause" else "resumed"
    click.echo(
        f"{what}: {done}" if changed else f"{what}: was not {'running' if action == 'pause' else 'paused'}"
    )


_config_option = click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
_db_option = click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
_destination_option = click.option("--destination", "-d", help="Only this destination (else every one).")


@channel.command()
@_config_option
@_db_option
@_destination_option
@click.argument("name")
def pause(config_path: str, db: str | None, destination: str | None, name: str) -> None:
    """Pause a channel's destinations (or one): nothing is sent, the queue keeps filling."""
    _change(config_path, db, name, destination, "pause")


@channel.command()
@_config_option
@_db_option
@_destination_option
@click.argument("name")
def resume(config_path: str, db: str | None, destination: str | None, name: str) -> None:
    """Resume a paused channel or destination; a halted queue retries its failed delivery first."""
    _change(config_path, db, name, destination, "resume")


def _dashboard_reads(engine):
    """The counts and pauses read through SQLAlchemy, for a store other than a SQLite file."""
    from types import SimpleNamespace

    from engine.store.controls import ControlRepository
    from engine.store.dashboard import DashboardRepository

    return SimpleNamespace(counts=DashboardRepository(engine).counts, pauses=ControlRepository(engine).pauses)


@channel.command("list")
@_config_option
@_db_option
@click.option("--window", type=click.Choice(["5m", "1h", "24h"]), default="1h", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The GET /api/channels document, for scripts.")
def list_channels(config_path: str, db: str | None, window: str, as_json: bool) -> None:
    """Each channel and destination: counts over the window, queue depth, oldest queued, paused or not."""
    from engine.channels.overview import WINDOWS, Overview, channels_json

    # What it shows of the channels only: no channel is built, no python: module imported.
    config, views = load_store_side_or_exit(config_path, views=True)
    overview = Overview(channels=tuple(c for c in views if c.enabled), listeners=())
    queues = [(c.name, d.name) for c in overview.channels for d in c.destinations]
    with store_reads(config_path, db, _dashboard_reads, side=config) as (_, reads):  # sqlite3 on SQLite
        counts = reads.counts(datetime.now(UTC) - WINDOWS[window], queues)
        pauses = {(p.channel, p.destination): p for p in reads.pauses()}
    document = channels_json(overview, counts, pauses, window)
    if as_json:
        click.echo(json.dumps(document, sort_keys=True))
        return
    rows = [("CHANNEL", "DESTINATION", "STATE", "RECEIVED", "SENT", "ERRORS", "QUEUED", "OLDEST")]
    for item in document["channels"]:
        totals = item["counts"]
        state = "paused" if item["paused"] else "running"
        received, sent, errored = (str(totals[key]) for key in ("received", "sent", "errored"))
        rows.append((item["name"], "-", state, received, sent, errored, str(item["queued_now"]), "-"))
        for dest in item["destinations"]:
            state = "halted" if dest["halted"] else "paused" if dest["paused"] else "running"
            state = "paused (channel)" if state == "running" and dest["held"] else state
            age = dest["oldest_queued_age_seconds"]
            sent, errored = str(dest["counts"]["sent"]), str(dest["counts"]["errored"])
            oldest = "-" if age is None else f"{age:.0f} s"
            rows.append(("", dest["name"], state, "", sent, errored, str(dest["queue_depth"]), oldest))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    click.echo(f"counts over the last {window}")
