"""The store's side of messages processed at intake: each stored with three deliveries, one commit each.

One thread, no reactor and no timers, so an instruction count is exact: ``n`` of the bench's
messages, each QUEUED for three destinations (the realistic scenario's), go through
``MessageRepository.insert_groups`` one group a commit on one kept connection (as the writer
thread does) into a fresh SQLite file. For instructions a message, run it under
``valgrind --tool=callgrind`` at n and 2n: (Ir(2n) - Ir(n)) / n.

    python bench/processed_insert.py --messages 500 [--engine-root DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESTINATIONS = ("partner", "record", "archive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="folder holding engine/")
    options = parser.parse_args()
    sys.path[:0] = [str(options.engine_root.resolve()), str(ROOT)]
    from engine.model import NewDelivery, Status
    from engine.store.db import create_engine_for
    from engine.store.messages import MessageRepository
    from engine.store.migrations import upgrade
    from tests.fakes.messages import lab_message

    engine = create_engine_for(f"sqlite:///{tempfile.mkdtemp(prefix='processed-insert-')}/store.db")
    upgrade(engine)
    repository = MessageRepository(engine)
    processed = []
    for n in range(options.messages):
        message = lab_message(n)
        deliveries = tuple(NewDelivery(name, Status.QUEUED, f"C{n}", message.raw) for name in DESTINATIONS)
        processed.append(dataclasses.replace(message, status=Status.QUEUED, error="", deliveries=deliveries))
    with engine.connect() as connection:
        for message in processed:
            repository.insert_groups([([message], None)], connection=connection)
    print(f"{repository.count()} messages stored, each with {len(DESTINATIONS)} deliveries")


if __name__ == "__main__":
    main()
