"""Search by content at scale: a store of a million messages, filled through the intake's insert, then timed.

    python -m bench.content_search [--messages 1000000] [--url sqlite:////tmp/cs.db | postgresql+psycopg://...]

The store is filled with the engine's own ``MessageRepository.insert_groups``, in groups of
``--group`` messages, from generated realistic messages (``bench/messages.py``) about a pool of
patients, each message with a control id of its own, then indexed as the engine's
ContentIndexer does (``index_pending``, ``--index-batch`` at a time). Printed: the insert rate,
the index rate and its CPU time a message, then the median and
slowest time of ``MessageRepository.search(MessageQuery(text=...), limit=50)`` for a rare word
(a patient's record number, ~``messages / patients`` hits), a common one (a family name) and
two words (family and given name), each searched ``--searches`` times.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.messages import generate, patient_id
from engine.channels.examine import header_columns
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.model import NewMessage, Status
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.reads import MessageQuery

_TEMPLATES = 20_000
_T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _messages(templates, count: int):
    """NewMessage values 1..count, cycling over the generated ``templates``."""
    samples = []
    for template in templates:
        raw = template.render(b"0")
        header = header_columns(read_header(decode(raw).text))
        samples.append(
            NewMessage(
                received_at=_T0,
                listener="bench",
                channel="intake",
                peer="127.0.0.1:1",
                status=Status.TRANSFORMED,
                raw=raw,
                ack_code="AA",
                error="",
                ack=None,
                **header,
            )
        )
    for number in range(1, count + 1):
        template, sample = templates[number % len(templates)], samples[number % len(templates)]
        control_id = f"CS{number:09d}"
        yield dataclasses.replace(
            sample,
            raw=template.render(control_id.encode()),
            control_id=control_id,
            received_at=_T0 + timedelta(seconds=number),
        )


def _timed(repository: MessageRepository, text: str, times: int) -> dict:
    seconds, found = [], 0
    for _ in range(times):
        start = time.perf_counter()
        found = len(repository.search(MessageQuery(text=text, limit=50)))
        seconds.append(time.perf_counter() - start)
    return {
        "query": text,
        "found": found,
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def main() -> None:
    """Fill the store and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--url", default="sqlite:////tmp/hl7engine-content-search.db")
    parser.add_argument("--group", type=int, default=500)
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--index-batch", type=int, default=500)
    arguments = parser.parse_args()
    engine = create_engine_for(arguments.url)
    upgrade(engine)
    repository = MessageRepository(engine)
    already = repository.count()
    templates = generate(_TEMPLATES, seed=17, patients=_TEMPLATES)
    filled, group, wanted = 0.0, [], max(0, arguments.messages - already)
    for number, message in enumerate(_messages(templates, wanted), start=1):
        group.append(message)
        if len(group) == arguments.group or number == wanted:
            start = time.perf_counter()
            repository.insert_groups([(group, None)])
            filled += time.perf_counter() - start
            group = []
    if wanted:
        print(f"inserted {wanted} messages in {filled:.0f} s: {wanted / filled:.0f}/s")
    started, cpu, indexed = time.perf_counter(), time.process_time(), 0
    while done := repository.index_pending(arguments.index_batch):
        indexed += done
    if indexed:
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"indexed {indexed} messages in {took:.0f} s: {indexed / took:.0f}/s,"
            f" {cpu / indexed * 1e6:.0f} µs of CPU a message (batches of {arguments.index_batch})"
        )
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    sample = next(_messages(templates[7:8], 1))
    decoded = decode(sample.raw).text
    pid = decoded.split("\rPID|", 1)[1].split("\r", 1)[0].split("|")
    family, given = pid[4].split("^")[:2]
    print(f"store: {repository.count()} messages")
    for text in (patient_id(templates[7]), family, f"{family} {given}"):
        print(_timed(repository, text, arguments.searches))
    engine.dispose()


if __name__ == "__main__":
    main()
