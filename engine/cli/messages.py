"""Commands on stored messages: messages list/search/show, resend, reprocess.

They read the config's engine block only (``engine.configstore``): no channel is built and no
``python:`` module imported. Unknown ids, channels, destinations or statuses are refused before
anything changes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from engine.cli.app import (
    ROW_ID,
    config_option,
    echo_json,
    progress,
    require_channel,
    store_engine,
    store_reads,
)

#: The statuses a message can have (engine.model.Status), without importing the store.
STATUSES = ("RECEIVED", "REJECTED", "FILTERED", "TRANSFORMED", "QUEUED", "SENT", "ERROR")
_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Moment(click.ParamType):
    """A time: ISO 8601 (a date, or a date and time; UTC without an offset) or an age such as 30m, 2d."""

    name = "TIME"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        age = _AGE.fullmatch(value.strip())
        if age:
            return datetime.now(UTC) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(
                f"{value!r} is not a time: give an ISO 8601 date or time (2026-12-07, 2026-12-07T08:30,"
                " 2026-12-07T08:30+01:00; UTC without an offset) or an age (90s, 30m, 1h, 2d, 1w)",
                param,
                ctx,
            )
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _status_option(help: str | None = None):
    return click.option(
        "--status",
        type=click.Choice(STATUSES, case_sensitive=False),
        callback=lambda ctx, param, value: value.upper() if value else None,
        help=help,
    )


@click.command()
@click.argument("message_ids", nargs=-1, type=ROW_ID)
@config_option
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--destination", help="Only this destination (default: every destination the message went to).")
@_status_option("Resend every message of this status (e.g. ERROR) instead of listed ids.")
@click.option("--channel")
@click.option("--limit", type=ROW_ID, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object: messages, deliveries.")
def resend(message_ids, config_path, db, destination, status, channel, limit, as_json) -> None:
    """Queue stored messages again for their destinations, unchanged (what was sent is sent again).

    Exit status: 0 queued, 1 an unknown id or nothing to resend, 2 an unknown channel, destination or status.
    """
    from engine.store.queues import QueueRepository

    config, repository = _repository(config_path, db)
    if destination is not None and config is not None and destination not in config.destinations:
        known = ", ".join(config.destinations) or "(none)"
        raise click.BadParameter(
            f"no destination {destination!r} in {config_path}; one of: {known}",
            param_hint="--destination",
        )
    ids = _select(config, repository, message_ids, status, channel, limit)
    queue = QueueRepository(repository.engine)
    new: list[int] = []
    with progress(_batches(ids), len(ids), "resending") as batches:
        for batch in batches:
            new += queue.resend(batch, destination=destination)
    if not new:
        to = f" to {destination}" if destination else ""
        raise click.ClickException(f"nothing resent: none of the {len(ids)} message(s) was sent{to} before")
    if as_json:
        echo_json({"messages": len(ids), "deliveries": new})
    else:
        click.echo(f"queued {len(new)} delivery(ies) for {len(ids)} message(s)")


@click.command()
@click.argument("message_ids", nargs=-1, type=ROW_ID)
@config_option
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@_status_option("Reprocess every message of this status (e.g. ERROR) instead of listed ids.")
@click.option("--channel")
@click.option("--limit", type=ROW_ID, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The outcome as a JSON object: messages, reprocessed.")
def reprocess(message_ids, config_path, db, status, channel, limit, as_json) -> None:
    """Run stored messages through their channel again (filters, transforms,
    destinations as configured now).

    Exit status: 0 done, 1 an unknown id or nothing to reprocess, 2 an unknown channel or status.
    """
    from engine.store.queues import QueueRepository

    config, repository = _repository(config_path, db)
    ids = _select(config, repository, message_ids, status, channel, limit)
    queue = QueueRepository(repository.engine)
    count = 0
    with progress(_batches(ids), len(ids), "reprocessing") as batches:
        for batch in batches:
            count += queue.reprocess(batch)
    if not count:
        raise click.ClickException(
            f"nothing to reprocess: the {len(ids)} message(s) are rejected, without a channel,"
            " pruned or not processed yet"
        )
    if as_json:
        echo_json({"messages": len(ids), "reprocessed": count})
    else:
        click.echo(f"{count} message(s) will be processed again")


def _batches(ids: list[int]):
    """One id at a time: progress counts messages, and each is its own short transaction."""
    return ([message_id] for message_id in ids)


def _repository(config_path: str, db: str | None):
    config, engine = store_engine(config_path, db)
    return config, _message_repository(engine)


def _message_repository(engine):
    """The SQLAlchemy reads of a store the stdlib does not read (store_reads): PostgreSQL's."""
    from engine.store.messages import MessageRepository

    return MessageRepository(engine)


def _check_channel(config, repository, channel: str | None) -> None:
    """A --channel that names no channel of the config (of the store, without one) is a usage error."""
    if channel is not None:
        require_channel(channel, config.channels if config is not None else repository.channel_names())


def _select(config, repository, message_ids, status, channel, limit) -> list[int]:
    """The ids given (each must exist), or those of a search (the CLI's way to resend or reprocess many)."""
    from engine.store.reads import MessageQuery

    if message_ids:
        unknown = sorted(set(message_ids) - repository.existing_ids(message_ids))
        if unknown:
            raise click.ClickException(f"no message {', '.join(map(str, unknown))}: nothing done")
        return list(message_ids)
    if not status and not channel:
        raise click.UsageError("give message ids, or --status/--channel to select messages")
    _check_channel(config, repository, channel)
    found = repository.search(MessageQuery(status=status, channel=channel, limit=limit))
    if not found:
        raise click.ClickException("no message matches: nothing done")
    return sorted(m.id for m in found)


@click.group()
def messages() -> None:
    """List, search and show stored messages."""


_search_options = [
    config_option,
    click.option("--db", help="SQLAlchemy URL of the store (instead of the config's)."),
    click.option("--control-id"),
    click.option("--patient-id", help="PID-3.1 of the message's first patient identifier (e.g. the MRN)"),
    click.option("--type", "message_type", help="ADT or ADT^A01"),
    click.option("--sender", help="MSH-3 namespace id, optionally APP^FACILITY... as APP or APP/FACILITY"),
    _status_option(),
    click.option("--channel"),
    click.option("--since", type=Moment(), help="From: ISO 8601 (UTC without offset) or an age: 2h, 1d"),
    click.option("--until", type=Moment(), help="Before this time: like --since"),
    click.option("--limit", type=ROW_ID, default=50, show_default=True),
    click.option("--before-id", type=ROW_ID, help="Page: only messages older than this id."),
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
    """List stored messages, newest first, optionally filtered.

    Exit status: 0 listed (even none), 1 no store there, 2 an unknown status or channel, a bad time.
    """
    from engine.store.reads import MessageQuery

    application, _, facility = (sender or "").partition("/")
    query = MessageQuery(
        control_id=control_id,
        patient_id=patient_id,
        message_type=message_type,
        sending_application=application or None,
        sending_facility=facility or None,
        status=status,
        channel=channel,
        since=since,
        until=until,
        limit=limit,
        before_id=before_id,
    )
    with store_reads(config_path, db, _message_repository) as (config, reads):
        _check_channel(config, reads, channel)
        found = reads.search(query)
    for summary in found:
        if as_json:
            echo_json(summary.to_json_dict())
        else:
            click.echo(
                f"{summary.id:>8}  {summary.received_at:%Y-%m-%d %H:%M:%S}  "
                f"{summary.status:<9} {summary.ack_code or '--':<2}  "
                f"{summary.message_type:<9} {summary.control_id:<22} "
                f"{summary.sending_application:<16} {summary.channel or '-'}"
            )


messages.add_command(list_messages, "search")


@messages.command("show")
@click.argument("message_id", type=ROW_ID)
@config_option
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--table", is_flag=True, help="The message as segments and fields, each field with its name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, content decoded per MSH-18.")
def show_message(message_id: int, config_path: str, db: str | None, table: bool, as_json: bool) -> None:
    """Show one stored message: its columns, the message (decoded per MSH-18), the transformed
    content, the ACK we sent, its deliveries and its history.

    Exit status: 0 shown, 1 no such message (or no store there).
    """
    from engine.hl7.charset import decode

    with store_reads(config_path, db, _message_repository) as (config, reads):
        stored = reads.get(message_id)
    if stored is None:
        raise click.ClickException(f"no message {message_id}")
    default = config.engine.default_charset if config is not None else "utf-8"
    raw = decode(stored.raw, default).text if stored.raw else ""
    transformed = decode(stored.transformed, default).text if stored.transformed else ""
    ack = decode(stored.ack, default).text if stored.ack else ""
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
        shown = {**stored.summary.to_json_dict(), "raw": raw, "transformed": transformed, "ack": ack}
        if table:
            shown["fields"] = [
                dict(zip(("field", "name", "value"), row, strict=True)) for row in _fields(raw)
            ]
        echo_json({**shown, "pruned_at": pruned_at, "deliveries": deliveries, "events": events})
        return
    for key, value in stored.summary.to_json_dict().items():
        click.echo(f"{key:>22}: {value}")
    click.echo(f"{'charset':>22}: {stored.charset or default}")
    _section("message", raw, table, pruned_at)
    if transformed and transformed != raw:
        _section("transformed", transformed, table, pruned_at)
    if ack:
        _section("ack", ack, False, None)
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


def _section(title: str, text: str, table: bool, pruned_at: str | None) -> None:
    click.echo(f"\n--- {title} ---")
    if pruned_at:
        click.echo(f"(content removed by retention at {pruned_at})")
    elif table:
        rows = _fields(text)
        width = max((len(path) for path, _, _ in rows), default=0)
        name_width = max((len(name) for _, name, _ in rows), default=0)
        for path, name, value in rows:
            click.echo(f"{path:<{width}}  {name:<{name_width}}  {value}")
    else:
        click.echo(text.replace("\r", "\n").rstrip("\n"))


def _fields(text: str) -> list[tuple[str, str, str]]:
    """(SEG[n]-field, its name in the message's version, its value) of each non-empty field, in order."""
    from engine.errors import HL7Error
    from engine.hl7.message import Message
    from engine.hl7.names import field_name

    try:
        message = Message.parse(text)
    except HL7Error:
        return []
    version = message.get("MSH-12").split(message.delimiters.component)[0]
    rows: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    for segment in message.segments:
        seen[segment.name] = occurrence = seen.get(segment.name, 0) + 1
        label = segment.name if occurrence == 1 else f"{segment.name}[{occurrence}]"
        values = segment.raw.split(message.delimiters.field)[1:]
        if segment.name == "MSH":  # MSH-1 is the field separator itself, MSH-2 the first value
            values = [message.delimiters.field, *values]
        for number, value in enumerate(values, start=1):
            if value:
                name = field_name(version, segment.name, number) or ""
                rows.append((f"{label}-{number}", name, value))
    return rows
