"""``hl7engine nodes``: the engine processes sharing the store, their state and what each holds."""

from __future__ import annotations

import json
import sys

import click

from engine.cli.app import DEFAULT_CONFIG, store_reads


@click.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--db", help="SQLAlchemy URL of the store (instead of the config's).")
@click.option("--json", "as_json", is_flag=True, help="The whole view as one JSON object, for scripts.")
def nodes(config_path: str, db: str | None, as_json: bool) -> None:
    """Show each node (engine process) on the store: alive, stopped or dead, its heartbeat, its leases.

    A node is dead when its heartbeat is older than engine.cluster.lease_seconds and it never said it
    stopped; nodes gone for more than a day are left out. Exit status: 0 shown, 1 the store failed.
    """
    from engine.errors import StoreError
    from engine.store.defaults import DEFAULT_LEASE_SECONDS

    with store_reads(config_path, db, _cluster_repository) as (config, reads):
        cluster = config.engine.cluster if config is not None else None
        lease_seconds = cluster.lease_seconds if cluster is not None else DEFAULT_LEASE_SECONDS
        try:
            view = reads.view(lease_seconds=lease_seconds)
        except StoreError as error:
            click.echo(f"nodes: {error}", err=True)
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(view.to_json_dict(), sort_keys=True))
        return
    if not view.nodes:
        click.echo("no node has registered: the engine runs alone on this store (or not at all)")
    else:
        rows = [("NODE", "STATE", "HEARTBEAT", "ROLES", "HOST", "PID", "HOLDS")]
        rows += [
            (
                node.name,
                node.state,
                f"{node.heartbeat_age:.0f} s ago",
                ",".join(node.roles),
                node.host,
                str(node.pid),
                ", ".join(lease.key + (" (expired)" if lease.expired else "") for lease in node.leases)
                or "-",
            )
            for node in view.nodes
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            click.echo(
                "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
            )
    if view.unheld:
        click.echo(f"held by no node: {', '.join(view.unheld)}")


def _cluster_repository(engine):
    """The SQLAlchemy reads of a store the stdlib does not read (store_reads): PostgreSQL's."""
    from engine.store.cluster import ClusterRepository

    return ClusterRepository(engine)
