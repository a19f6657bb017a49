"""Scenario (3), patient record ingest: a mixed ADT/SIU/ORU/DFT stream whose patients recur.

The stream goes into the record destination.

The engine has one channel taking ADT, SIU, ORU and DFT to a ``record`` destination
(docs/record.md). The load is scenario (1)'s, except that every message is about one of a pool
of ``PATIENTS`` patients, so identities are found again across message kinds and senders
instead of each message creating a person. A row reports intake, the record ingest rate (the
record deliveries that became SENT within the measured window, per second), what was still
waiting at the window's end, and, after a bounded drain, the persons and identifiers in the
record.

The fresh variant (scenario ``patient-record-fresh``) sends registrations and updates (A01, A04,
A08), each about a new person with full ADT content: every message creates a patient, with their
identifiers, lists, visit and clinical rows. Each connection sends ``FRESH_TEMPLATES`` different
messages before one recurs.
"""

from __future__ import annotations

from bench.harness import Options, Row, both, measure, row_folder
from bench.stores import DeliveryWatch, drain_figures, probe, sqlite_url
from bench.systems import EngineSetup, RunContext, System

CHANNEL, DESTINATION = "patient-record", "record"
LABEL = "hl7engine, SQLite, patient record"
# Patients in the pool the messages are about: with 64 generated messages per connection, each
# patient recurs across connections, message kinds and senders.
PATIENTS = 200
# The fresh variant: registrations and updates only, each about a new person; per connection this many
# messages are generated before one recurs (8 connections: 65,536 messages, beyond any row's window).
FRESH_KINDS = ("ADT^A01", "ADT^A04", "ADT^A08")
FRESH_TEMPLATES = 8192

CHANNELS = (
    {
        "name": CHANNEL,
        "source": "bench",
        "accept": {"types": ["ADT", "SIU", "ORU", "DFT"]},
        "destinations": [{"name": DESTINATION, "type": "record"}],
    },
)


def measure_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext, *, on_window=None
) -> Row:
    """One patient-record row, on SQLite in the row's folder; ``on_window`` as for ``measure``."""
    return _record_row(scenario, system, connections, options, context, on_window, patients=PATIENTS)


def measure_fresh_row(
    scenario: str, system: System, connections: int, options: Options, context: RunContext, *, on_window=None
) -> Row:
    """One row of fresh patients (every message a new person, ADT only), as ``measure_row``."""
    load = {"kinds": FRESH_KINDS, "templates": FRESH_TEMPLATES}
    return _record_row(scenario, system, connections, options, context, on_window, patients=None, load=load)


def _record_row(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    on_window,
    *,
    patients: int | None,
    load: dict | None = None,
) -> Row:
    with row_folder(options, f"bench-record-{connections}-") as folder:
        url = sqlite_url(folder / "hl7engine.db")
        engine = system.configured(LABEL, EngineSetup(channels=CHANNELS, store_url=url))
        watch = DeliveryWatch(url, CHANNEL, DESTINATION, options.drain_seconds)
        row = measure(
            scenario,
            engine,
            connections,
            options,
            context,
            on_window=both(watch.on_window, on_window),
            patients=patients,
            load=load,
        )
        if row.status != "ok":
            return row
        with probe(url) as store:
            row.observed.update(watch.figures())
            row.observed["deliveries"] = store.deliveries(CHANNEL, DESTINATION)
            row.observed.update(store.record_counts())
    row.observed["patient_pool"] = patients
    return row


def figures(row: Row) -> dict[str, str]:
    """The patient-record columns of the report."""
    seen = row.observed
    if "persons" not in seen:
        return {}
    statuses = seen["deliveries"]
    return {
        "record msg/s (window)": f"{seen['sent_rate_in_window']:,.0f}",
        **drain_figures(seen),
        "record deliveries": ", ".join(f"{status} {count:,}" for status, count in sorted(statuses.items())),
        "persons / identifiers": (
            f"{seen['persons']:,} / {seen['identifiers']:,}"
            + (f" (pool of {seen['patient_pool']:,})" if seen["patient_pool"] else " (a new patient each)")
        ),
    }
