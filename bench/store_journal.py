"""Micro-benchmark: what one note of a queue's delivery journal costs, in a file and in the store.

    python bench/store_journal.py [--notes N] [--postgres URL]

A note is what the sending thread does per message: ``note_sending`` (one write, with the answer
held back before it) and ``answered``. Printed per journal: wall and CPU microseconds a note,
for the file journal, the store journal on PostgreSQL (asynchronous commit, durability process;
synchronous, power_loss) and on SQLite. Each PostgreSQL run has a database of its own, dropped after.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.channels.journal import Journals  # noqa: E402
from engine.model import Delivery, DeliveryResult, Outcome  # noqa: E402
from engine.store.db import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402

_ACK = b"MSH|^~\\&|LAB|NORTH|EHR|SOUTH|20260101120000||ACK^A01^ACK|A1|P|2.5\rMSA|AA|C1\r"


def measure(journals: Journals, notes: int, round_size: int) -> tuple[float, float]:
    """Wall and CPU microseconds a note (note_sending and answered), over ``notes`` notes."""
    journal = journals.journal("bench", "lab")
    journal.open()
    queued_at = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        for n in range(1, notes + 1):
            delivery = Delivery(n, n, "bench", "lab", f"C{n}", b"", 1, queued_at)
            if journal.note_sending(delivery) is not None:
                raise SystemExit(f"the journal refused note {n}")
            journal.answered(delivery, DeliveryResult(Outcome.SENT, _ACK, "AA"))
            if n % round_size == 0:  # a round recorded
                journal.recorded()
        journal.flush()
        return (time.perf_counter() - wall) * 1e6 / notes, (time.thread_time() - cpu) * 1e6 / notes
    finally:
        journal.close()


def _postgres(server: str, run) -> tuple[float, float]:
    name = f"hl7engine_bench_{secrets.token_hex(6)}"
    admin = server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = f"{server}/{name}"
        _migrate(url)
        return run(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _migrate(url: str) -> None:
    engine = create_engine_for(url)
    upgrade(engine)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=5000)
    parser.add_argument("--round", type=int, default=250, help="notes a round (emptied after each)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rows = [
            (
                "file, process",
                measure(Journals(folder / "file", sync=False, reactor=None), args.notes, args.round),
            )
        ]
        rows.append(
            (
                "file, power_loss",
                measure(Journals(folder / "synced", sync=True, reactor=None), args.notes, args.round),
            )
        )
        for sync, label in ((False, "postgresql, process"), (True, "postgresql, power_loss")):

            def run(url, sync=sync):
                return measure(
                    Journals(folder, sync=sync, reactor=None, store_url=url), args.notes, args.round
                )

            rows.append((label, _postgres(args.postgres, run)))
        sqlite_url = f"sqlite:///{folder / 'store.db'}"
        _migrate(sqlite_url)
        rows.append(
            (
                "sqlite, process",
                measure(
                    Journals(folder, sync=False, reactor=None, store_url=sqlite_url), args.notes, args.round
                ),
            )
        )
    print(f"{'journal':25} {'wall µs/note':>13} {'CPU µs/note':>12}")
    for label, (wall, cpu) in rows:
        print(f"{label:25} {wall:13.1f} {cpu:12.1f}")


if __name__ == "__main__":
    main()
