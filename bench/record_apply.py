"""The record's apply alone: messages of the realistic scenario applied in runs, no intake, no sockets.

Each run's messages are stored first, as the intake would (not timed): the record's facts
reference the stored message. The CPU time is printed too (SQLite works in this process): on a
shared machine it moves less than the wall time. One destination queue is applied in order by one
process, so this rate is the ceiling of the `record` destination, whatever else runs beside it:

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
from engine.channels.examine import header_columns  # noqa: E402
from engine.hl7.header import read_header  # noqa: E402
from engine.hl7.message import Message  # noqa: E402
from engine.model import NewMessage, Status  # noqa: E402
from engine.record.ingest import IngestResult, RecordIngestor  # noqa: E402
from engine.store.db import create_engine_for  # noqa: E402
from engine.store.messages import MessageRepository  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402


def stored(text: str) -> NewMessage:
    """The message as the intake stores it (the record's facts reference its row)."""
    columns = header_columns(read_header(text))
    return NewMessage(
        raw=text.encode(),
        received_at=datetime.now(UTC),
        listener="bench",
        peer="127.0.0.1",
        status=Status.RECEIVED,
        channel="record",
        ack_code="AA",
        **columns,
    )


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
        repository = MessageRepository(engine)
        seconds, cpu, applied = 0.0, 0.0, 0
        run: list = []
        for number, template in enumerate(templates, start=1):
            text = template.render(f"R{number}".encode()).decode("utf-8", "replace")
            run.append(text)
            if len(run) == options.run or number == len(templates):
                # The intake's part, not timed: the record's facts name the stored message.
                ids = repository.insert([stored(text) for text in run])
                now = datetime.now(UTC)
                batch = [(i, Message.parse(text), now) for i, text in zip(ids, run, strict=True)]
                started, cpu_started = time.perf_counter(), time.process_time()
                results = ingestor.apply_many(batch)
                seconds += time.perf_counter() - started
                cpu += time.process_time() - cpu_started
                applied += sum(isinstance(result, IngestResult) for result in results)
                run = []
        engine.dispose()
    rate, each_ms = len(templates) / seconds, seconds / len(templates) * 1e3
    about = "as many new" if options.fresh else options.patients
    print(
        f"{len(templates):,} messages about {about} patients applied in runs of {options.run}:"
        f" {seconds:.2f} s applying, {rate:,.0f} msg/s ({each_ms:.2f} ms each);"
        f" CPU {cpu:.2f} s, {len(templates) / cpu:,.0f} msg/s; {applied:,} applied"
    )


if __name__ == "__main__":
    main()
