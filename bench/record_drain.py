"""The record destination draining a backlog in process: the apply with the engine's work around it.

Messages of the realistic scenario are stored and queued for a ``record`` destination first (not
timed), then one Dispatcher drains the queue through RecordDestination on a real reactor: claiming
rounds, reading payloads, parsing, the apply in chunks, the attempts' rows and events. Compare
its CPU per message with ``bench/record_apply.py`` (the apply alone) to see the engine's overhead:

    python bench/record_drain.py --messages 6000 [--patients 200]
    python bench/record_drain.py --fresh --messages 6000   # every message an ADT of a new person
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task  # noqa: E402

from bench.messages import generate  # noqa: E402
from bench.record_apply import stored  # noqa: E402
from engine.channels.destinations.record import RecordDestination  # noqa: E402
from engine.channels.dispatcher import Dispatcher, RetryPolicy  # noqa: E402
from engine.channels.journal import Journals  # noqa: E402
from engine.model import NewDelivery, ProcessingResult, Status  # noqa: E402
from engine.store.message_store import MessageStore  # noqa: E402

#: Messages stored (and queued) per write while filling the backlog.
FILL_BATCH = 500


async def _fill(store: MessageStore, texts: list[str]) -> None:
    """Store every message as the intake would and queue it for the record, as a channel would."""
    for start in range(0, len(texts), FILL_BATCH):
        batch = texts[start : start + FILL_BATCH]
        ids = await store.add([stored(text) for text in batch])
        await store.record_processing(
            [
                ProcessingResult(
                    message_id,
                    Status.QUEUED,
                    deliveries=(NewDelivery("record", Status.QUEUED, f"R{message_id}", text.encode()),),
                )
                for message_id, text in zip(ids, batch, strict=True)
            ]
        )


async def _drain(reactor, folder: Path, texts: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, deliveries settled) of one dispatcher draining the queued texts."""
    store = MessageStore(f"sqlite:///{folder}/engine.db", reactor=reactor)
    store.start()
    await _fill(store, texts)
    settled: list[int] = []
    everything = defer.Deferred()

    def on_settled(delivery, result) -> None:
        settled.append(delivery.delivery_id)
        if len(settled) == len(texts) and not everything.called:
            everything.callback(None)

    journals = Journals(folder / "journal", sync=False, reactor=reactor)
    journal = journals.journal("record", "record")
    journal.open()
    dispatcher = Dispatcher(
        "record",
        RecordDestination("record", store=store, reactor=reactor),
        RetryPolicy(jitter=0),
        store=store,
        journal=journal,
        reactor=reactor,
        clock=lambda: datetime.now(UTC),
        on_settled=on_settled,
        observer=lambda *_: None,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    dispatcher.start()
    await everything
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await dispatcher.stop()
    await store.stop()
    return seconds, cpu, len(settled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6_000)
    parser.add_argument("--patients", type=int, default=200, help="the realistic scenario's pool")
    parser.add_argument(
        "--fresh", action="store_true", help="ADT only, every message about a new person (full PID, PV1, ...)"
    )
    options = parser.parse_args()
    if options.fresh:
        drawn = generate(options.messages * 3, patients=None)
        templates = [template for template in drawn if template.kind.startswith("ADT")][: options.messages]
    else:
        templates = generate(options.messages, patients=options.patients)
    texts = [
        template.render(f"R{number}".encode()).decode("utf-8", "replace")
        for number, template in enumerate(templates, start=1)
    ]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "journal").mkdir()

        def run(reactor):
            return defer.ensureDeferred(_drain(reactor, Path(folder), texts)).addCallback(_report)

        task.react(run)


def _report(figures: tuple[float, float, int]) -> None:
    seconds, cpu, settled = figures
    print(
        f"{settled:,} record deliveries drained: {seconds:.2f} s, {settled / seconds:,.0f} msg/s;"
        f" CPU {cpu:.2f} s, {settled / cpu:,.0f} msg/s ({cpu / settled * 1e6:,.0f} µs each)"
    )


if __name__ == "__main__":
    main()
