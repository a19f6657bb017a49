"""The benchmark scenarios, in one registry; each runs rows (one system, one connection count).

A scenario that can run has a ``run`` function returning its rows; one that cannot yet has a
``pending`` reason, which the report prints instead of figures. How a row is measured is in
``harness.py``; a scenario with fixtures of its own has its module (``end_to_end.py``,
``patient_record.py``, ``large_store.py``, ``postgresql.py``, ``realistic.py``), its own
figures for the report, and the performance targets it is held to (``targets.py``).
"""

from __future__ import annotations

import functools

from bench import end_to_end, large_store, patient_record, postgresql, realistic, targets
from bench.harness import Scenario, sweep

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "intake",
            "(1) Intake only: store + ACK",
            systems=(
                "engine",
                "engine-power-loss",
                "engine-encrypted",
                "engine-i2",
                "python-hl7",
                "txhl7",
                "simple-hl7",
                "node-hl7-server",
                "ceiling",
            ),
            run=sweep,
            check=targets.intake,
        ),
        Scenario(
            "end-to-end",
            "(2) End to end: intake -> filter -> transforms -> mllp destination -> SENT",
            systems=("engine", "engine-w1"),
            run=functools.partial(sweep, variants=(end_to_end.measure_row,)),
            figures=end_to_end.figures,
            check=targets.end_to_end,
        ),
        Scenario(
            "patient-record",
            "(3) Patient record ingest of a mixed ADT/SIU/ORU/DFT stream",
            systems=("engine", "engine-w1"),
            run=functools.partial(sweep, variants=(patient_record.measure_row,)),
            figures=patient_record.figures,
            check=targets.patient_record,
        ),
        Scenario(
            "patient-record-fresh",
            "(3) Patient record ingest of fresh patients: every message an ADT about a new person",
            systems=("engine", "engine-w1"),
            run=functools.partial(sweep, variants=(patient_record.measure_fresh_row,)),
            figures=patient_record.figures,
            check=targets.patient_record_fresh,
        ),
        Scenario(
            "large-store",
            "(4) Intake with 1 million messages stored and 100,000 queued for a destination that is down",
            systems=("engine",),
            run=large_store.run,
            figures=large_store.figures,
            check=targets.large_store,
        ),
        Scenario(
            "postgresql",
            "(5) PostgreSQL instead of SQLite for (1) and (2)",
            systems=("engine", "engine-i2", "engine-w1"),
            run=postgresql.run,
            figures=postgresql.figures,
            check=targets.postgresql,
        ),
        Scenario(
            "realistic",
            "(6) Realistic: every message to an mllp partner, the patient record and an archive file",
            systems=("engine", "engine-w1", "engine-i2"),
            run=functools.partial(sweep, variants=(realistic.store_only_row, realistic.measure_row)),
            figures=realistic.figures,
            check=targets.realistic,
        ),
        Scenario(
            "realistic-postgresql",
            "(6) Realistic, on PostgreSQL: the same two rows, each on a database of its own",
            systems=("engine",),
            run=realistic.run_postgresql,
            figures=realistic.figures,
            check=targets.realistic,
        ),
    ]
}
