"""Commands on stored messages: messages list/search/show, resend, reprocess."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from engine.cli.app import (
    DEFAULT_CONFIG,
    main,
    message_repository,
)


@main.command()
@click.argument("message_ids", nargs=-1, type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--destination", help="Only this destination (default: every destination the message went to).")
@click.option("--status", help="Resend every message of this status (e.g. ERROR) instead of listed ids.")
@click.option("--channel")
@click.option("--limit", default=1000, show_default=True)
def resend(message_ids, config_path, db, destination, status, channel, limit) -> None:
    """Queue stored messages again for their destinations, unchanged (what was sent is sent again)."""
    from engine.store.queues import QueueRepository

    repository = message_repository(config_path, db)
    ids = _select(repository, message_ids, status, channel, limit)
    new = QueueRepository(repository.engine).resend(ids, destination=destination)
    click.echo(f"queued {len(new)} delivery(ies) for {len(ids)} message(s)")


@main.command()
@click.argument("message_ids", nargs=-1, type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--status", help="Reprocess every message of this status (e.g. ERROR) instead of listed ids.")
@click.option("--channel")
@click.option("--limit", default=1000, show_default=True)
def reprocess(message_ids, config_path, db, status, channel, limit) -> None:
    """Run stored messages through their channel again (filters, transforms,
    destinations as configured now)."""
    from engine.store.queues import QueueRepository

    repository = message_repository(config_path, db)
    ids = _select(repository, message_ids, status, channel, limit)
    count = QueueRepository(repository.engine).reprocess(ids)
    click.echo(f"{count} message(s) will be processed again")


def _select(repository, message_ids, status, channel, limit) -> list[int]:
    """The ids given, or those of a search (the CLI's way to resend or reprocess many)."""
    from engine.store.messages import MessageQuery

    if message_ids:
        return list(message_ids)
    if not status and not channel:
        raise click.UsageError("give message ids, or --status/--channel to select messages")
    found = repository.search(
        MessageQuery(status=status.upper() if status else None, channel=channel, limit=limit)
    )
    return sorted(m.id for m in found)


@main.group()
def messages() -> None:
    """List, search and show stored messages."""


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_search_options = [
    click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True),
    click.option("--db", help="SQLAlchemy URL of the store (instead of the config's)."),
    click.option("--control-id"),
    click.option("--patient-id", help="PID-3.1 of the message's first patient identifier (e.g. the MRN)"),
    click.option("--type", "message_type", help="ADT or ADT^A01"),
    click.option("--sender", help="MSH-3 namespace id, optionally APP^FACILITY... as APP or APP/FACILITY"),
    click.option("--status"),
    click.option("--channel"),
    click.option("--since", help="ISO 8601 time (UTC when no offset)"),
    click.option("--until", help="ISO 8601 time (UTC when no offset)"),
    click.option("--limit", default=50, show_default=True),
    click.option("--before-id", type=int, help="Page: only messages older than this id."),
    click.option("--json", "as_json", is_flag=True, help="One JSON object per message, for scripts."),
]


def _with_search_options(func):
    for option in reversed(_search_options):
        func = option(func)
    return func


@messages.command("list")
@_with_search_options
def list_messages(
    config_path,
    db,
    control_id,
    patient_id,
    message_type,
    sender,
    status,
    channel,
    since,
    until,
    limit,
    before_id,
    as_json,
) -> None:
    """List stored messages, newest first, optionally filtered."""
    from engine.store.messages import MessageQuery

    application, _, facility = (sender or "").partition("/")
    query = MessageQuery(
        control_id=control_id,
        patient_id=patient_id,
        message_type=message_type,
        sending_application=application or None,
        sending_facility=facility or None,
        status=status.upper() if status else None,
        channel=channel,
        since=_parse_time(since),
        until=_parse_time(until),
        limit=limit,
        before_id=before_id,
    )
    for summary in message_repository(config_path, db).search(query):
        if as_json:
            click.echo(json.dumps(summary.to_json_dict(), sort_keys=True))
        else:
            click.echo(
                f"{summary.id:>8}  {summary.received_at:%Y-%m-%d %H:%M:%S}  "
                f"{summary.status:<9} {summary.ack_code or '--':<2}  "
                f"{summary.message_type:<9} {summary.control_id:<22} "
                f"{summary.sending_application:<16} {summary.channel or '-'}"
            )


@messages.command("show")
@click.argument("message_id", type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--json", "as_json", is_flag=True)
def show_message(message_id: int, config_path: str, db: str | None, as_json: bool) -> None:
    """Show one stored message: its columns, the raw message, the ACK we sent, its deliveries and history."""
    stored = message_repository(config_path, db).get(message_id)
    if stored is None:
        click.echo(f"no message {message_id}", err=True)
        sys.exit(1)
    raw = stored.raw.decode("utf-8", errors="replace")
    ack = stored.ack.decode("utf-8", errors="replace") if stored.ack else ""
    pruned_at = stored.pruned_at.isoformat() if stored.pruned_at else None
    deliveries = [
        {
            "id": d.id,
            "destination": d.destination,
            "status": d.status,
            "attempts": d.attempts,
            "response_code": d.response_code,
            "reason": d.reason,
            "superseded": d.superseded_at is not None,
        }
        for d in stored.deliveries
    ]
    events = [
        {"at": e.at.isoformat(), "status": e.status, "destination": e.destination, "detail": e.detail}
        for e in stored.events
    ]
    if as_json:
        shown = {**stored.summary.to_json_dict(), "raw": raw, "ack": ack, "pruned_at": pruned_at}
        click.echo(json.dumps({**shown, "deliveries": deliveries, "events": events}, sort_keys=True))
        return
    for key, value in stored.summary.to_json_dict().items():
        click.echo(f"{key:>22}: {value}")
    click.echo("\n--- message ---")
    if pruned_at:
        click.echo(f"(content removed by retention at {pruned_at})")
    else:
        click.echo(raw.replace("\r", "\n").rstrip("\n"))
    if ack:
        click.echo("\n--- ack ---")
        click.echo(ack.replace("\r", "\n").rstrip("\n"))
    if deliveries:
        click.echo("\n--- deliveries ---")
        for d in deliveries:
            superseded = " (superseded)" if d["superseded"] else ""
            click.echo(
                f"{d['id']:>8}  {d['destination']:<16} {d['status']:<8} attempts {d['attempts']}"
                f"{superseded}  {d['reason']}".rstrip()
            )
    if events:
        click.echo("\n--- history ---")
        for e in events:
            click.echo(f"{e['at']}  {e['status']:<8} {e['destination'] or '-':<16} {e['detail']}")


messages.add_command(list_messages, "search")
