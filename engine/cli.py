"""The ``hl7engine`` command: run, check, send, messages, resend, reprocess, patient, prune, backup, rekey,
new-key, hash-password.

Click is the CLI toolkit (sub-commands, typed options, help, progress bars). Only this module
and the entry point of ``run`` touch the global reactor.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from engine.errors import ConfigError

DEFAULT_CONFIG = "channels.yaml"


def _load(config_path: str):
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

    config = _load(config_path)
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
    pid_file.parent.mkdir(parents=True, exist_ok=True)
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


PID_FILE = "hl7engine.pid"


def _reload(engine) -> None:
    d = engine.reload_from_file()
    d.addErrback(lambda failure: None)  # already logged, problem by problem; the old config keeps running


@main.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def reload(config_path: str) -> None:
    """Ask the running engine to reload its config (checked here first; every problem is printed)."""
    config = _load(config_path)
    pid = _running_engine(config)
    if pid is None:
        click.echo(f"no running engine found ({config.engine.data_dir / PID_FILE})", err=True)
        sys.exit(1)
    os.kill(pid, signal.SIGHUP)
    click.echo(f"asked engine {pid} to reload {config_path}")


def _running_engine(config) -> int | None:
    """The pid of the engine running this config (its pid file names a live process), or None."""
    try:
        pid = int((config.engine.data_dir / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


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

    repository = _repository(config_path, db)
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

    repository = _repository(config_path, db)
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


@main.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def check(config_path: str) -> None:
    """Validate a config; print every problem with its YAML path and exit non-zero if any."""
    config = _load(config_path)
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


@main.command()
@click.argument("address")
@click.argument("sources", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each ACK.")
@click.option("--batch", is_flag=True, help="Send each file as one frame, batch envelope included.")
@click.option("-v", "--verbose", is_flag=True, help="Print one line per message.")
@click.option("--tls", is_flag=True, help="Speak TLS; the listener's certificate must match the host.")
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: PEM CA certificate(s) to trust (default: the system's).",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: our PEM client certificate, for a listener that requires one (with --key).",
)
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="With --tls: the --cert's PEM key.")
def send(
    address: str,
    sources: tuple[str, ...],
    timeout: float,
    batch: bool,
    verbose: bool,
    tls: bool,
    ca: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    """Send HL7 files, directories or stdin ('-') to ADDRESS (host:port) over MLLP and check each ACK."""
    from engine.hl7.ack import parse_reply
    from engine.listeners.client import MLLPClient, ReplyTimeout, control_id_of, split_messages

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="ADDRESS")
    context = _client_tls(tls, ca, cert, key)
    payloads: list[tuple[str, bytes]] = []
    for source in sources or ("-",):
        for name, data in _read_sources(source):
            for index, payload in enumerate(split_messages(data, keep_batch_envelope=batch), start=1):
                payloads.append((f"{name}#{index}", payload))
    counts: dict[str, int] = {}
    failures = 0
    try:
        client = MLLPClient(host or "127.0.0.1", int(port), timeout=timeout, tls=context)
    except OSError as exc:  # refused, unreachable, or the TLS handshake failed
        click.echo(f"cannot connect to {address}: {exc}", err=True)
        sys.exit(1)
    try:
        with (
            click.progressbar(payloads, label="sending", file=sys.stderr)
            if not verbose and sys.stderr.isatty()
            else _plain(payloads) as items
        ):
            for name, payload in items:
                expected = control_id_of(payload)
                try:
                    reply = parse_reply(client.request(payload))
                except (ReplyTimeout, ConnectionError, OSError) as exc:
                    counts["timeout"] = counts.get("timeout", 0) + 1
                    failures += 1
                    click.echo(f"{name}: {exc}", err=True)
                    client.close()
                    client = MLLPClient(host or "127.0.0.1", int(port), timeout=timeout, tls=context)
                    continue
                matched = batch or reply.control_id == expected
                code = reply.code if matched else f"{reply.code} (MSA-2 {reply.control_id!r} != {expected!r})"
                counts[reply.code or "?"] = counts.get(reply.code or "?", 0) + 1
                if not (reply.positive and matched) and not (batch and reply.text.startswith(("BHS", "FHS"))):
                    failures += 1
                if verbose or not (reply.positive and matched):
                    click.echo(f"{name}: {expected or '(no control id)'} -> {code}", err=not verbose)
    finally:
        client.close()
    summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
    click.echo(f"sent {len(payloads)} message(s): {summary or 'none'}")
    if failures:
        sys.exit(1)


def _client_tls(tls: bool, ca: str | None, cert: str | None, key: str | None):
    """The TLS context `send` connects with, or None without --tls (the destinations' client side)."""
    if not tls:
        if ca or cert or key:
            raise click.UsageError("--ca, --cert and --key need --tls")
        return None
    if (cert is None) != (key is None):
        raise click.UsageError("give --cert and --key together")
    from pydantic import ValidationError

    from engine.channels.destinations.mllp import client_tls_context
    from engine.channels.destinations.spec import TlsSettings

    try:
        settings = TlsSettings(ca_file=ca, cert_file=cert, key_file=key)
    except ValidationError as error:  # a file that holds no PEM, a key that is encrypted
        raise click.UsageError(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        ) from None
    return client_tls_context(settings)


class _plain:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return self.items

    def __exit__(self, *exc):
        return False


def _read_sources(source: str):
    if source == "-":
        yield "stdin", sys.stdin.buffer.read()
        return
    path = Path(source)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(child), child.read_bytes()
    else:
        yield str(path), path.read_bytes()


@main.group()
def messages() -> None:
    """List, search and show stored messages."""


def _repository(config_path: str, db: str | None):
    """The store's message repository: the config's database (or ``db``), with the config's keys.

    The config is read for its keys even with ``db``, when the file exists.
    """
    from engine.store.cipher import CLEAR
    from engine.store.db import create_engine_for
    from engine.store.messages import MessageRepository

    config = _load(config_path) if db is None or Path(config_path).exists() else None
    cipher = CLEAR if config is None else config.engine.store.cipher()
    return MessageRepository(create_engine_for(db or config.store_url, cipher=cipher))


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
    for summary in _repository(config_path, db).search(query):
        if as_json:
            click.echo(json.dumps(summary.to_json_dict(), sort_keys=True))
        else:
            click.echo(
                f"{summary.id:>8}  {summary.received_at:%Y-%m-%d %H:%M:%S}  "
                f"{summary.status:<9} {summary.ack_code or '--':<2}  "
                f"{summary.message_type:<9} {summary.control_id:<22} "
                f"{summary.sending_application:<16} {summary.channel or '-'}"
            )


messages.add_command(list_messages, "search")


@messages.command("show")
@click.argument("message_id", type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--json", "as_json", is_flag=True)
def show_message(message_id: int, config_path: str, db: str | None, as_json: bool) -> None:
    """Show one stored message: its columns, the raw message, the ACK we sent, its deliveries and history."""
    stored = _repository(config_path, db).get(message_id)
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


@main.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--channel", help="Only this channel's messages.")
@click.option("--days", type=click.IntRange(min=1), help="Keep this many days, instead of retention_days.")
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; change nothing.")
@click.option(
    "--vacuum", is_flag=True, help="Then VACUUM (SQLite: rewrites the file; stop the engine first)."
)
@click.option("--batch", type=click.IntRange(min=1, max=10_000), help="Messages per transaction.")
def prune(config_path, db, channel, days, dry_run, vacuum, batch) -> None:
    """Remove the content of messages older than their channel's retention_days; their rows stay.

    Exit status: 0 done (pruned or nothing to prune), 1 the store failed, 2 nothing says what to keep.
    """
    import getpass

    from engine.errors import StoreError
    from engine.store.audit import AuditRepository
    from engine.store.retention import RetentionPolicy, RetentionRepository

    config = None if db and days else _load(config_path)
    policy = RetentionPolicy({}, days) if days else config.retention_policy()
    if not policy.prunes_anything and not vacuum:
        raise click.UsageError("no retention_days in the config: give --days, or set retention_days")
    url = db or config.store_url
    if vacuum and url.startswith("sqlite") and config is not None and (pid := _running_engine(config)):
        # A VACUUM holds SQLite's write lock while it copies the file: intake would be refused meanwhile.
        raise click.UsageError(f"the engine (pid {pid}) is running: stop it before --vacuum")
    engine = _repository(config_path, url).engine
    retention = RetentionRepository(engine)
    shown = [0.0]

    def progress(target, so_far) -> None:
        if time.monotonic() - shown[0] >= 1.0:  # a line a second at most, on stderr
            shown[0] = time.monotonic()
            click.echo(f"{target.label}: {so_far.messages} message(s) pruned so far", err=True)

    started = time.monotonic()
    try:
        summary = retention.prune(
            policy,
            limit=batch or (config.engine.store.prune_batch if config else 200),
            dry_run=dry_run,
            channel=channel,
            progress=progress,
        )
        if summary.total.messages and not dry_run:
            AuditRepository(engine).record(
                user=getpass.getuser(), action="prune", remote="cli", detail=summary.audit_detail
            )
        vacuumed = vacuum and not dry_run
        if vacuumed:
            retention.vacuum()
    except StoreError as error:
        click.echo(f"prune failed: {error}", err=True)
        sys.exit(1)
    verb = "would prune" if dry_run else "pruned"
    for target, pruned in summary.targets:
        click.echo(
            f"{target.label}: {verb} {pruned.messages} message(s),"
            f" {_megabytes(pruned.content_bytes)} of content (received before {target.cutoff:%Y-%m-%d %H:%M})"
        )
    total = summary.total
    click.echo(
        f"total: {verb} {total.messages} message(s), {_megabytes(total.content_bytes)}"
        f" in {time.monotonic() - started:.1f} s"
    )
    before, after = summary.space_before, retention.space()
    if before is not None and not dry_run:
        click.echo(f"file: {_megabytes(before.file_bytes)} -> {_megabytes(after.file_bytes)}")
        if after.free_bytes and not vacuumed:
            click.echo(f"{_megabytes(after.free_bytes)} free inside the file: `prune --vacuum` gives it back")
    elif before is None and vacuumed:
        click.echo("PostgreSQL: VACUUM done; the space is reused, not returned to the OS")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


@main.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
def backup(destination: Path, config_path: str, db: str | None) -> None:
    """Copy the SQLite store to DESTINATION while the engine runs, and check the copy.

    Exit status: 0 copied and sound, 1 the copy failed, 2 refused (PostgreSQL, DESTINATION exists).
    """
    from engine.errors import StoreError
    from engine.store.backup import backup_store, sqlite_file

    url = db or _load(config_path).store_url
    try:
        sqlite_file(url)
    except StoreError as error:
        click.echo(f"backup refused: {error}", err=True)
        sys.exit(2)
    if destination.exists():
        click.echo(f"backup refused: {destination} exists; a backup never overwrites a file", err=True)
        sys.exit(2)

    def progress(remaining: int, total: int) -> None:
        if total and sys.stderr.isatty():
            click.echo(f"\rcopied {100 * (total - remaining) // total}%", err=True, nl=False)

    try:
        done = backup_store(url, destination, progress=progress)
    except StoreError as error:
        click.echo(f"backup failed: {error}", err=True)
        sys.exit(1)
    click.echo(f"backup {done.path}: {_megabytes(done.size)} in {done.seconds:.1f} s, integrity ok")


@main.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--batch", default=500, show_default=True, help="Rows read and written at a time.")
@click.option("--pause", default=0.0, show_default=True, help="Seconds to wait between batches.")
def rekey(config_path: str, db: str | None, batch: int, pause: float) -> None:
    """Seal again with the current key every stored value an older key sealed (or none), batch by batch.

    Runs beside the engine; afterwards the old keys can be removed from the config.
    """
    from engine.errors import StoreError
    from engine.record import schema as _record_schema  # noqa: F401  (its sealed columns join the metadata)
    from engine.store.rekey import rekey as rekey_store

    repository = _repository(config_path, db)
    try:
        changed = rekey_store(repository.engine, batch=batch, pause=pause)
    except StoreError as error:
        click.echo(f"rekey stopped: {error}", err=True)
        sys.exit(1)
    for column, count in changed.items():
        click.echo(f"{column}: {count} resealed")
    click.echo(f"rekey done: {sum(changed.values())} value(s) now sealed with the current key")


@main.command("new-key")
def new_key() -> None:
    """Print a new random encryption key (base64), for a key file or variable of engine.store.encryption."""
    from engine.store.cipher import new_key as make_key

    click.echo(make_key())


@main.group()
def patient() -> None:
    """Find and show people in the unified patient record."""


@patient.command("find")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--identifier", help="An identifier value (any assigning authority unless --authority).")
@click.option("--authority", help="The identifier's assigning authority (PID-3.4).")
@click.option("--name", help="Family or given name prefix, any case.")
@click.option("--birthdate", help="YYYY-MM-DD")
@click.option("--limit", default=50, show_default=True)
def patient_find(config_path, db, identifier, authority, name, birthdate, limit) -> None:
    """Search people by identifier, name or birth date; one JSON object per person."""
    from engine.record.query import find_patients

    if not (identifier or name or birthdate):
        raise click.UsageError("give --identifier, --name or --birthdate")
    engine = _repository(config_path, db).engine
    for person in find_patients(
        engine, identifier=identifier, authority=authority, name=name, birthdate=birthdate, limit=limit
    ):
        click.echo(json.dumps(person, sort_keys=True, default=str))


@patient.command("show")
@click.argument("patient_id", type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--fhir", "as_fhir", is_flag=True, help="Print the FHIR R4 $everything Bundle instead.")
def patient_show(patient_id, config_path, db, as_fhir) -> None:
    """Everything known about one person (JSON), or its FHIR R4 Bundle."""
    from engine.record.fhir import everything
    from engine.record.query import get_patient

    engine = _repository(config_path, db).engine
    found = everything(engine, patient_id) if as_fhir else get_patient(engine, patient_id)
    if found is None:
        click.echo(f"no patient {patient_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(found, indent=2, sort_keys=True, default=str))


@patient.command("unmerge")
@click.argument("merge_id", type=int)
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db")
@click.option("--reason", default="", help="Why, kept in the record's history.")
def patient_unmerge(merge_id, config_path, db, reason) -> None:
    """Undo a merge (A40/A34/A39/A18): what it moved goes back to the prior person, who is active again."""
    from engine.errors import EngineError
    from engine.record.ingest import RecordIngestor

    engine = _repository(config_path, db).engine
    try:
        moved = RecordIngestor(engine).unmerge(merge_id, reason=reason)
    except EngineError as error:
        click.echo(f"cannot undo merge {merge_id}: {error}", err=True)
        sys.exit(1)
    click.echo(f"merge {merge_id} undone: {moved} row(s) moved back")
