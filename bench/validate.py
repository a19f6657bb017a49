"""Cost of validation and of v2.xml per message, over the corpus.

Run from the project root: ``python bench/validate.py``. For every corpus message with a
readable header: validation (engine.hl7.validate, the structures already cached) and ER7 ->
v2.xml -> ER7 (engine.hl7.xml), each timed as the best of five runs. Prints the median, the
90th percentile and the worst per-message time in milliseconds, and the per-message time of
the first validation of each version (structures read from hl7apy).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.errors import HL7Error  # noqa: E402
from engine.hl7.batch import looks_like_batch, split_batch  # noqa: E402
from engine.hl7.charset import decode  # noqa: E402
from engine.hl7.header import read_header  # noqa: E402
from engine.hl7.validate import validate  # noqa: E402
from engine.hl7.xml import from_xml, to_xml  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"


def corpus_messages() -> list[str]:
    """Every corpus message with a readable header (batch members one by one)."""
    found = []
    for line in (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        text = decode((CORPUS / line.split("\t")[0]).read_bytes(), "utf-8").text
        members = [text]
        if looks_like_batch(text):
            try:
                members = list(split_batch(text).messages)
            except HL7Error:
                continue
        for member in members:
            try:
                read_header(member)
            except HL7Error:
                continue
            found.append(member)
    return found


def best_ms(function, text: str) -> float:
    """Best of five calls, in milliseconds."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def round_trip(text: str) -> None:
    try:
        from_xml(to_xml(text))
    except HL7Error:
        pass


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:<22} messages {len(samples):4d}  median {statistics.median(samples):6.2f} ms"
        f"  p90 {p90:6.2f} ms  max {ordered[-1]:6.2f} ms"
    )


def main() -> None:
    texts = corpus_messages()
    start = time.perf_counter()
    for text in texts:  # the first pass reads every structure and segment definition
        validate(text)
    first = (time.perf_counter() - start) * 1000 / len(texts)
    print(f"first pass (structures read from hl7apy): {first:.2f} ms/message")
    print(summary("validate", [best_ms(validate, t) for t in texts]))
    print(summary("ER7 -> v2.xml -> ER7", [best_ms(round_trip, t) for t in texts]))
    segments = statistics.median(t.count("\r") + t.count("\n") for t in texts)
    size = statistics.median(len(t) for t in texts)
    print(f"median message size: {size:.0f} characters, {segments:.0f} segments")


if __name__ == "__main__":
    main()
