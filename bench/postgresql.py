"""Scenario (5): scenarios (1) and (2) with the store on PostgreSQL instead of SQLite.

Every row gets a database of its own on the server (``--postgres``, by default the one the tests
use at 127.0.0.1:5432), created just before the engine starts and dropped after the row, also
when it failed. The rows are compared with the SQLite rows of (1) and (2) measured in the same
run; when those were not run, the report says so instead of comparing with anything else.
"""

from __future__ import annotations

from bench import end_to_end
from bench.harness import Options, Row, Scenario, measure, sweep
from bench.stores import Database, database_exists, fresh_database, postgres_unreachable
from bench.systems import SYSTEMS, EngineSetup, RunContext, System

INTAKE_LABEL = "hl7engine, PostgreSQL, intake"
END_TO_END_LABEL = "hl7engine, PostgreSQL, end to end"


def intake_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext, *, on_window=None
) -> Row:
    """One intake row on a database of its own (dropped afterwards).

    ``on_window`` works as for ``measure`` (the profiler's).
    """
    with fresh_database(options.postgres_server) as database:
        engine = system.configured(INTAKE_LABEL, EngineSetup(store_url=database.url))
        row = measure(scenario, engine, connections, options, context, on_window=on_window)
    return _dropped(row, database, "intake", options)


def end_to_end_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext, *, on_window=None
) -> Row:
    """One end-to-end row on a database of its own (dropped afterwards); ``on_window`` as for ``measure``."""
    with fresh_database(options.postgres_server) as database:
        row = end_to_end.measure_row(
            scenario,
            system,
            connections,
            options,
            context,
            store_url=database.url,
            label=END_TO_END_LABEL,
            on_window=on_window,
        )
    return _dropped(row, database, "end-to-end", options)


def _dropped(row: Row, database: Database, compares_with: str, options: Options) -> Row:
    """The row with the SQLite scenario it compares with, and its database, checked to be gone."""
    row.observed.update(
        compares_with=compares_with,
        database=database.name,
        database_dropped=not database_exists(options.postgres_server, database.name),
    )
    return row


def run(scenario: Scenario, options: Options, context: RunContext, *, progress=print) -> list[Row]:
    """Intake and end-to-end rows on PostgreSQL.

    When the server cannot be reached, one unavailable row each instead.
    """
    if options.systems is not None and "engine" not in options.systems:
        return []
    problem = postgres_unreachable(options.postgres_server)
    if problem is None:
        return sweep(scenario, options, context, progress=progress, variants=(intake_row, end_to_end_row))
    progress(f"  {problem}")
    engine = SYSTEMS["engine"]
    return [
        Row(scenario.name, engine.name, label, engine.role, connections, status="unavailable", reason=problem)
        for connections in options.connections
        for label in (INTAKE_LABEL, END_TO_END_LABEL)
    ]


def figures(row: Row) -> dict[str, str]:
    """The end-to-end columns for the end-to-end rows, and the database every row ran on."""
    if "database" not in row.observed:
        return {}
    database = row.observed["database"] + (
        " (dropped)" if row.observed["database_dropped"] else " (NOT dropped)"
    )
    return {**end_to_end.figures(row), "database": database}
