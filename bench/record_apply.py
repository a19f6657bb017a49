"""The record's apply alone: messages of the realistic scenario applied in runs, no intake, no sockets.

One destination queue is applied in order by one process, so this rate is the ceiling of the
`record` destination, whatever else runs beside it:

    python bench/record_apply.py --messages 12000 [--patients 200] [--run 20]
    python bench/record_apply.py --fresh --messages 12000   # every message an ADT of a new person

The store is a fresh SQLite file (or ``--store URL``, e.g. a PostgreSQL database of its own).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.messages import generate  # noqa: E402
from engine.hl7.message import Message  # noqa: E402
from engine.record.ingest import RecordIngestor  # noqa: E402
from engine.store.db import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=12_000)
    parser.add_argument("--patients", type=int, default=200, help="the realistic scenario's pool")
    parser.add_argument("--run", type=int, default=20, help="messages applied per call (a delivery round)")
    parser.add_argument("--store", help="SQLAlchemy URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--fresh", action="store_true", help="ADT only, every message about a new person (full PID, PV1, ...)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine_for(options.store or f"sqlite:///{folder}/record.db")
        upgrade(engine)
        ingestor = RecordIngestor(engine)
        if options.fresh:
            drawn = generate(options.messages * 3, patients=None)
            templates = [template for template in drawn if template.kind.startswith("ADT")][
                : options.messages
            ]
        else:
            templates = generate(options.messages, patients=options.patients)
        started = time.perf_counter()
        run: list = []
        for number, template in enumerate(templates, start=1):
            text = template.render(f"R{number}".encode()).decode("utf-8", "replace")
            run.append((number, Message.parse(text), datetime.now(UTC)))
            if len(run) == options.run:
                ingestor.apply_many(run)
                run = []
        if run:
            ingestor.apply_many(run)
        seconds = time.perf_counter() - started
        engine.dispose()
    rate, each_ms = len(templates) / seconds, seconds / len(templates) * 1e3
    about = "as many new" if options.fresh else options.patients
    print(
        f"{len(templates):,} messages about {about} patients applied in runs of {options.run}:"
        f" {seconds:.2f} s, {rate:,.0f} msg/s ({each_ms:.2f} ms each)"
    )


if __name__ == "__main__":
    main()
