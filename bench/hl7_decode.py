"""Micro-benchmark of the intake hot path: decode + read_header + validate_header vs hl7.parse.

Run from the project root: ``python bench/hl7_decode.py [corpus-file ...]``. Prints the best
per-message time in microseconds over several timeit repeats (stdlib only).
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import hl7

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.hl7.charset import decode  # noqa: E402
from engine.hl7.header import read_header, validate_header  # noqa: E402
from engine.hl7.message import Message  # noqa: E402

DEFAULT_FILES = [
    "adt/fhirconv_adt_a01_01.hl7",
    "adt/pyhl7_sample_msh_nulls.hl7",
    "oru/cdcti_natus_002_nbs.hl7",
]


def per_call_us(statement, number: int) -> float:
    """Best of five timeit runs, in microseconds per call."""
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def intake(raw: bytes) -> None:
    """What the intake does per frame before storing: decode, read and validate the header."""
    decoded = decode(raw)
    validate_header(read_header(decoded.text))


def python_hl7(raw: bytes) -> None:
    """python-hl7's full parse (it needs CR segment separators)."""
    hl7.parse(raw.decode("utf-8").replace("\r\n", "\r").replace("\n", "\r"))


def main(files: list[str]) -> None:
    """Print one line of timings per corpus file."""
    print(
        f"{'file':42} {'bytes':>7} {'segments':>8} {'intake µs':>10}"
        f" {'Message.parse+get µs':>21} {'hl7.parse µs':>13}"
    )
    for name in files:
        raw = (ROOT / "tests" / "corpus" / name).read_bytes()
        text = decode(raw).text
        segments = len(Message.parse(text))
        ours = per_call_us(lambda raw=raw: intake(raw), 20000)
        lazy = per_call_us(lambda text=text: Message.parse(text).get("PID-3.1"), 2000)
        theirs = per_call_us(lambda raw=raw: python_hl7(raw), 200)
        print(f"{name:42} {len(raw):>7} {segments:>8} {ours:>10.1f} {lazy:>21.1f} {theirs:>13.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_FILES)
