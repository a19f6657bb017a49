"""Micro-benchmark of encryption at rest: sealing and opening a typical message and a person's name.

Run from the project root: ``python bench/cipher.py``. Prints the best per-call time in
microseconds over several timeit repeats, for the benchmark's generated messages (about 1.2 KB,
as the intake rows send) and one name as the record stores it.
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.messages import generate  # noqa: E402
from engine.store.cipher import Cipher  # noqa: E402


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


if __name__ == "__main__":
    main()
