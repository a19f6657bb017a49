"""Store maintenance: prune (retention), backup (SQLite), rekey and new-key (encryption at rest)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from engine.cli.app import (
    DEFAULT_CONFIG,
    echo_json,
    load_config_or_exit,
    load_store_side_or_exit,
    megabytes,
    message_repository,
    require_channel,
    running_engine,
)


@click.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--channel", help="Only this channel's messages.")
@click.option("--days", type=click.IntRange(min=1), help="Keep this many days, instead of retention_days.")
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; change nothing.")
@click.option(
    "--vacuum", is_flag=True, help="Then VACUUM (SQLite: rewrites the file; stop the engine first)."
)
@click.option("--batch", type=click.IntRange(min=1, max=10_000), help="Messages per transaction.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object, for scripts.")
def prune(config_path, db, channel, days, dry_run, vacuum, batch, as_json) -> None:
    """Remove the content of messages older than their channel's retention_days; their rows stay.

    Exit status: 0 done (pruned or nothing to prune), 1 the store failed, 2 nothing says what to keep.
    """
    import getpass

    from engine.errors import StoreError
    from engine.store.audit import AuditRepository
    from engine.store.retention import RetentionPolicy, RetentionRepository

    config = None if db and days else load_config_or_exit(config_path)
    policy = RetentionPolicy({}, days) if days else config.retention_policy()
    if not policy.prunes_anything and not vacuum:
        raise click.UsageError("no retention_days in the config: give --days, or set retention_days")
    url = db or config.store_url
    if vacuum and url.startswith("sqlite") and config is not None and (pid := running_engine(config)):
        # A VACUUM holds SQLite's write lock while it copies the file: intake would be refused meanwhile.
        raise click.UsageError(f"the engine (pid {pid}) is running: stop it before --vacuum")
    repository = message_repository(config_path, url)
    if channel is not None:
        # The config's channels and those of the store: a channel since removed may still hold messages.
        configured = [c.name for c in config.channels] if config is not None else []
        require_channel(channel, [*configured, *repository.channel_names()])
    engine = repository.engine
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
    if as_json:
        targets = [
            {
                "target": target.label,
                "cutoff": target.cutoff.isoformat(),
                "messages": pruned.messages,
                "content_bytes": pruned.content_bytes,
            }
            for target, pruned in summary.targets
        ]
        total = {"messages": summary.total.messages, "content_bytes": summary.total.content_bytes}
        echo_json({"dry_run": dry_run, "vacuumed": vacuumed, "targets": targets, "total": total})
        return
    verb = "would prune" if dry_run else "pruned"
    for target, pruned in summary.targets:
        click.echo(
            f"{target.label}: {verb} {pruned.messages} message(s),"
            f" {megabytes(pruned.content_bytes)} of content (received before {target.cutoff:%Y-%m-%d %H:%M})"
        )
    total = summary.total
    click.echo(
        f"total: {verb} {total.messages} message(s), {megabytes(total.content_bytes)}"
        f" in {time.monotonic() - started:.1f} s"
    )
    before, after = summary.space_before, retention.space()
    if before is not None and not dry_run:
        click.echo(f"file: {megabytes(before.file_bytes)} -> {megabytes(after.file_bytes)}")
        if after.free_bytes and not vacuumed:
            click.echo(f"{megabytes(after.free_bytes)} free inside the file: `prune --vacuum` gives it back")
    elif before is None and vacuumed:
        click.echo("PostgreSQL: VACUUM done; the space is reused, not returned to the OS")


@click.command()
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
def backup(destination: Path, config_path: str, db: str | None) -> None:
    """Copy the SQLite store to DESTINATION (its record's file beside it) while the engine runs; check them.

    Exit status: 0 copied and sound, 1 the copy failed, 2 refused (PostgreSQL, DESTINATION exists).
    """
    from engine.errors import StoreError
    from engine.store.backup import backup_source, backup_store
    from engine.store.driver.record_attach import record_file

    url = db or load_store_side_or_exit(config_path).store_url  # the engine block only: no channel is built
    try:
        backup_source(url)
    except StoreError as error:
        click.echo(f"backup refused: {error}", err=True)
        sys.exit(2)
    for taken in (destination, record_file(destination)):  # the record's copy goes beside it
        if taken.exists():
            click.echo(f"backup refused: {taken} exists; a backup never overwrites a file", err=True)
            sys.exit(2)

    def progress(remaining: int, total: int) -> None:
        if total and sys.stderr.isatty():
            click.echo(f"\rcopied {100 * (total - remaining) // total}%", err=True, nl=False)

    try:
        done = backup_store(url, destination, progress=progress)
    except StoreError as error:
        click.echo(f"backup failed: {error}", err=True)
        sys.exit(1)
    record = f" and {done.record}" if done.record is not None else ""
    click.echo(f"backup {done.path}{record}: {megabytes(done.size)} in {done.seconds:.1f} s, integrity ok")


@click.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Rows read and written at a time.",
)
@click.option(
    "--pause",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait between batches.",
)
def rekey(config_path: str, db: str | None, batch: int, pause: float) -> None:
    """Seal again with the current key every stored value an older key sealed (or none), batch by batch.

    Runs beside the engine; afterwards the old keys can be removed from the config.
    """
    from engine.errors import StoreError
    from engine.record import schema as _record_schema  # noqa: F401  (its sealed columns join the metadata)
    from engine.store.rekey import rekey as rekey_store

    repository = message_repository(config_path, db)
    try:
        changed = rekey_store(repository.engine, batch=batch, pause=pause)
    except StoreError as error:
        click.echo(f"rekey stopped: {error}", err=True)
        sys.exit(1)
    for column, count in changed.items():
        click.echo(f"{column}: {count} resealed")
    click.echo(f"rekey done: {sum(changed.values())} value(s) now sealed with the current key")


@click.command("new-key")
def new_key() -> None:
    """Print a new random encryption key (base64), for a key file or variable of engine.store.encryption."""
    from engine.store.cipher import new_key as make_key

    click.echo(make_key())
