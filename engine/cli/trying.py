"""``hl7engine try``: what a channel would make of messages in files, without storing or sending them."""

from __future__ import annotations

import json
import sys

import click

from engine.cli.app import DEFAULT_CONFIG, load_config_or_exit, read_sources


@click.command("try")
@click.argument("channel")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON (a list, one per message).")
def try_channel(channel: str, files: tuple[str, ...], config_path: str, as_json: bool) -> None:
    """Run the messages of FILES through CHANNEL's acceptance, filters and transforms.

    FILES are files, folders (every file below) or '-' for stdin. Nothing is stored or delivered.
    Prints for each message whether the channel takes it (or why not: refused, filtered, failed)
    and, per destination, the fields its output changes.
    """
    from engine.channels.trial import try_message
    from engine.listeners.client import split_messages

    config = load_config_or_exit(config_path)
    if channel not in {c.name for c in config.channels}:
        known = ", ".join(c.name for c in config.channels)
        click.echo(f"hl7engine try: no channel named {channel!r} in {config_path}; known: {known}", err=True)
        sys.exit(2)
    trials = []
    try:
        sources = [source for name in files for source in read_sources(name)]
    except OSError as exc:
        click.echo(f"hl7engine try: cannot read {exc.filename or '-'}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    for name, data in sources:
        for index, payload in enumerate(split_messages(data), start=1):
            trials.append((f"{name}#{index}", try_message(config, channel, payload)))
    if not trials:
        click.echo(f"hl7engine try: no HL7 message in {', '.join(files)}", err=True)
        sys.exit(1)
    if as_json:
        outcomes = [{"source": source, **trial.as_dict()} for source, trial in trials]
        click.echo(json.dumps(outcomes, indent=2, sort_keys=True))
        return
    for source, trial in trials:
        for line in _lines(source, trial):
            click.echo(line)


def _lines(source: str, trial) -> list[str]:
    """The text form of one trial: a headline, then a line per destination and per change."""
    about = " ".join(filter(None, (trial.control_id, trial.message_type)))
    head = f"{source} {about}".rstrip()
    if trial.outcome != "accepted":
        return [f"{head}: {trial.outcome} by {trial.channel}: {trial.reason}"]
    lines = [f"{head}: accepted by {trial.channel}"]
    for destination in trial.destinations:
        if destination.outcome != "queued":
            lines.append(f"  -> {destination.destination}: {destination.outcome}: {destination.reason}")
            continue
        count = len(destination.changes)
        lines.append(f"  -> {destination.destination}: would deliver, {count or 'no'} change(s)")
        lines.extend(f"       {change}" for change in destination.changes)
    return lines
