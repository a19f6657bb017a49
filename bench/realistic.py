"""Scenario (6), a realistic config: every message to an mllp partner, the patient record and an archive file.

One channel takes every generated message to three destinations: an mllp partner (the receiver
of ``servers/downstream.py``, as in (2)), a ``record`` destination (the unified patient record,
as in (3), the messages about a pool of ``PATIENTS`` patients) and an archive ``file``
destination (one file per message in the row's folder). Beside it, in the same run, the
store-only row (the catch-all channel without destinations, same load) gives the intake it is
compared with: downstream work must not slow intake down.

A row reports intake (rate, p50, p99), what reached the partner within the window, what the
record applied within the window, the drain, and whether everything was delivered: the SENT
deliveries of the channel, every destination together, must be three times the messages
acknowledged. ``realistic-postgresql`` runs the same two rows on PostgreSQL, each on a database
of its own (``--postgres``), dropped afterwards.
"""

from __future__ import annotations

import contextlib

from bench import end_to_end
from bench.harness import Options, Row, Scenario, both, measure, row_folder, sweep
from bench.stores import DeliveryWatch, drain_figures, fresh_database, postgres_unreachable, probe, sqlite_url
from bench.systems import SYSTEMS, EngineSetup, RunContext, System

CHANNEL = "realistic"
PARTNER, RECORD, ARCHIVE = "partner", "record", "archive"
DESTINATIONS = (PARTNER, RECORD, ARCHIVE)
LABEL = "hl7engine, SQLite, partner + record + archive"
STORE_ONLY_LABEL = "hl7engine, SQLite, store only"
PG_LABEL = "hl7engine, PostgreSQL, partner + record + archive"
PG_STORE_ONLY_LABEL = "hl7engine, PostgreSQL, store only"
# As in (3): each patient recurs across connections, message kinds and senders.
PATIENTS = 200


def channels(partner_port: int, archive: str) -> tuple[dict, ...]:
    """The one channel: everything to the partner, the record and the archive folder."""
    return (
        {
            "name": CHANNEL,
            "source": "bench",
            "accept": {"types": ["*"]},
            "destinations": [
                {"name": PARTNER, "type": "mllp", "host": "127.0.0.1", "port": partner_port},
                {"name": RECORD, "type": "record"},
                {"name": ARCHIVE, "type": "file", "directory": archive},
            ],
        },
    )


def store_only_row(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    *,
    on_window=None,
    store_url: str | None = None,
    label: str = STORE_ONLY_LABEL,
) -> Row:
    """The same load on the catch-all channel without destinations: the intake compared with.

    On ``store_url`` (default: SQLite in the row's work folder).
    """
    row = measure(
        scenario,
        system.configured(label, EngineSetup(store_url=store_url)),
        connections,
        options,
        context,
        on_window=on_window,
        patients=PATIENTS,
    )
    row.observed["store_only"] = True
    return row


def measure_row(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    *,
    on_window=None,
    store_url: str | None = None,
    label: str = LABEL,
) -> Row:
    """One realistic row on ``store_url`` (default: SQLite in the row's folder).

    ``on_window`` works as for ``measure``.
    """
    with (
        row_folder(options, f"bench-realistic-{connections}-") as folder,
        contextlib.closing(end_to_end.Downstream(folder)) as partner,
    ):
        url = store_url or sqlite_url(folder / "hl7engine.db")
        engine = system.configured(
            label, EngineSetup(channels=channels(partner.port, str(folder / "archive")), store_url=url)
        )
        # The record's progress over the window (no drain of its own), then every destination's drain.
        applied = DeliveryWatch(url, CHANNEL, RECORD, 0.0)
        everything = DeliveryWatch(url, CHANNEL, None, options.drain_seconds)
        row = measure(
            scenario,
            engine,
            connections,
            options,
            context,
            on_window=both(both(applied.on_window, everything.on_window), on_window),
            patients=PATIENTS,
        )
        partner.close()
        if row.status != "ok":
            return row
        with probe(url) as store:
            statuses = {name: store.deliveries(CHANNEL, name) for name in DESTINATIONS}
            sent = store.sent_in_order(CHANNEL, PARTNER)
        received = partner.received()
        archived = sum(1 for path in (folder / "archive").iterdir() if not path.name.startswith("."))
    window_start, window_end = everything.times["start"], everything.times["start"] + row.seconds
    in_window = sum(1 for moment, _ in received if window_start <= moment < window_end)
    row.observed.update(everything.figures())
    row.observed.update(
        {
            "delivered_rate": in_window / row.seconds if row.seconds > 0 else 0.0,
            "applied_rate": applied.figures()["sent_rate_in_window"],
            "deliveries": statuses,
            "sent_all": sum(counts.get("SENT", 0) for counts in statuses.values()),
            "archived_files": archived,
            "partner_received": len(received),
            "order_problem": end_to_end.order_problem(sent, [control_id for _, control_id in received]),
        }
    )
    return row


def postgresql_store_only_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext
) -> Row:
    """The store-only row on a PostgreSQL database of its own (dropped afterwards)."""
    with fresh_database(options.postgres_server) as database:
        return store_only_row(
            scenario, system, connections, options, context, store_url=database.url, label=PG_STORE_ONLY_LABEL
        )


def postgresql_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext
) -> Row:
    """The realistic row on a PostgreSQL database of its own (dropped afterwards)."""
    with fresh_database(options.postgres_server) as database:
        return measure_row(
            scenario, system, connections, options, context, store_url=database.url, label=PG_LABEL
        )


def run_postgresql(scenario: Scenario, options: Options, context: RunContext, *, progress=print) -> list[Row]:
    """The store-only and realistic rows on PostgreSQL; one unavailable row each when it cannot be reached."""
    if options.systems is not None and "engine" not in options.systems:
        return []
    problem = postgres_unreachable(options.postgres_server)
    if problem is None:
        return sweep(
            scenario,
            options,
            context,
            progress=progress,
            variants=(postgresql_store_only_row, postgresql_row),
        )
    progress(f"  {problem}")
    engine = SYSTEMS["engine"]
    return [
        Row(scenario.name, engine.name, label, engine.role, connections, status="unavailable", reason=problem)
        for connections in options.connections
        for label in (PG_STORE_ONLY_LABEL, PG_LABEL)
    ]


def figures(row: Row) -> dict[str, str]:
    """The realistic row's columns of the report: delivered, applied, drain, everything delivered."""
    seen = row.observed
    if "sent_all" not in seen:
        return {}
    expected = row.acknowledged * len(DESTINATIONS)
    return {
        "partner msg/s (window)": f"{seen['delivered_rate']:,.0f}",
        "record applied msg/s (window)": f"{seen['applied_rate']:,.0f}",
        **drain_figures(seen),
        "SENT (all destinations) / 3 x acknowledged": f"{seen['sent_all']:,} / {expected:,}"
        + (" (equal)" if seen["sent_all"] == expected else " (NOT equal)"),
        "partner order": "as message ids" if seen["order_problem"] is None else seen["order_problem"],
        "archive files": f"{seen['archived_files']:,}",
    }
