"""Micro-benchmark of encryption at rest: sealing and opening a typical message and a person's name.

Run from the project root: ``python bench/cipher.py``. Prints the best per-call time in
microseconds over several timeit repeats, for the benchmark's generated messages (about 1.2 KB,
as the intake rows send) and one name as the record stores it; then what the intake's store
write (``MessageRepository.insert_groups``, groups of 8 with their ACKs, SQLite) costs a message
in CPU time, in clear and sealed, in alternating rounds, which other load on the machine disturbs
less than the server rows of ``run.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.messages import generate  # noqa: E402
from engine.model import NewMessage, Status  # noqa: E402
from engine.store.cipher import CLEAR, Cipher  # noqa: E402
from engine.store.db import create_engine_for  # noqa: E402
from engine.store.messages import MessageRepository  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402

_ACK = b"MSH|^~\\&|HUB|TEST|PMS|CLINIC|20261207010000||ACK^A04|A1|P|2.5.1\rMSA|AA|CTRL000001\r"


def per_call_us(statement, number: int) -> float:
    """Best of five timeit runs, in microseconds per call."""
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def main() -> None:
    cipher = Cipher({"current": os.urandom(32)}, "current", index=os.urandom(32))
    messages = [template.render(b"CTRL%06d" % n) for n, template in enumerate(generate(200))]
    size = statistics.mean(len(m) for m in messages)
    sealed = [cipher.seal(m) for m in messages]
    rounds = iter(range(10**9))

    def seal() -> None:
        cipher.seal(messages[next(rounds) % len(messages)])

    def open_() -> None:
        cipher.open(sealed[next(rounds) % len(sealed)])

    name = "QUIXOTLWOOD"
    sealed_name = cipher.seal_text(name)
    print(f"message, {size:.0f} bytes on average ({len(messages)} generated):")
    print(f"  seal  {per_call_us(seal, 20_000):6.2f} µs")
    print(f"  open  {per_call_us(open_, 20_000):6.2f} µs")
    print(f"  sealed size: +{statistics.mean(len(s) - len(m) for s, m in zip(sealed, messages)):.0f} bytes")
    print("a name (record person data):")
    print(f"  seal_text  {per_call_us(lambda: cipher.seal_text(name), 20_000):6.2f} µs")
    print(f"  open_text  {per_call_us(lambda: cipher.open_text(sealed_name), 20_000):6.2f} µs")
    print(f"  blind      {per_call_us(lambda: cipher.blind(name), 20_000):6.2f} µs")
    insert_costs(messages, cipher)


def insert_costs(messages: list[bytes], cipher: Cipher, rounds: int = 11, groups: int = 250) -> None:
    """CPU µs a message of the intake's insert, clear and sealed, in alternating rounds.

    CPU time (this process's): waiting for the disk, which other work on the machine makes vary
    by tens of µs, is not what sealing costs.
    """
    now = datetime.now(UTC)
    new = [
        NewMessage(
            raw=raw,
            received_at=now,
            listener="bench",
            peer="127.0.0.1",
            status=Status.RECEIVED,
            channel="intake",
            control_id=f"CTRL{n:06d}",
            ack_code="AA",
            ack=_ACK,
        )
        for n, raw in enumerate(messages)
    ]
    costs: dict[str, list[float]] = {"clear": [], "sealed": []}
    with tempfile.TemporaryDirectory() as folder:
        repositories = {}
        for name, used in (("clear", CLEAR), ("sealed", cipher)):
            engine = create_engine_for(f"sqlite:///{folder}/{name}.db", cipher=used)
            upgrade(engine)
            repositories[name] = (engine, MessageRepository(engine))
        for _ in range(rounds):
            for name, (engine, repository) in repositories.items():
                with engine.connect() as connection:
                    started = time.process_time()
                    for group in range(groups):
                        batch = [new[(group * 8 + i) % len(new)] for i in range(8)]
                        repository.insert_groups([(batch, None)], connection=connection)
                    costs[name].append((time.process_time() - started) / (groups * 8) * 1e6)
        for engine, _ in repositories.values():
            engine.dispose()
    print(f"intake's insert, groups of 8 with ACKs, SQLite, CPU ({rounds} alternating rounds; best, median):")
    for name, found in costs.items():
        runs = ", ".join(f"{cost:.1f}" for cost in found)
        print(f"  {name:6}  {min(found):6.1f} {statistics.median(found):6.1f} µs a message (rounds: {runs})")


if __name__ == "__main__":
    main()
