"""The intake's side of messages processed at intake: from the frame to the rows handed to the store.

One thread, no reactor running and no timers, so an instruction count is exact: the realistic
scenario's channel (bench/realistic.py: a partner, the record and an archive; the roles of
``intake_cpu.py --realistic``, intake and processing, so no destination is built) takes ``n`` of
the bench's messages through ``Intake.handle``, which reads each, has its channel process it
and builds its row with the deliveries, up to the store's insert: the store here only keeps the
rows (its ``add`` never fires). For instructions a message, run it under
``valgrind --tool=callgrind`` at n and 2n: (Ir(2n) - Ir(n)) / n.

    python bench/pipeline_cpu.py --messages 500 [--profile FILE] [--engine-root DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class CollectingStore:
    """The store of the bench: keeps the rows it is given, never commits (nothing is stored)."""

    def __init__(self, defer):
        self.defer = defer
        self.rows = []

    def add(self, rows):
        self.rows.extend(rows)
        return self.defer.Deferred()

    def pending_for_processing(self, channel, *, after_id, limit):
        return self.defer.succeed([])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--profile", type=Path, help="write the cProfile stats of the messages' loop here")
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="folder holding engine/")
    options = parser.parse_args()
    sys.path[:0] = [str(options.engine_root.resolve()), str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="pipeline-cpu-") as folder:
        run(Path(folder), options.messages, options.profile)


def run(folder: Path, messages: int, profile: Path | None) -> None:
    """Build the realistic channel in ``folder`` and take ``messages`` messages through its intake.

    With ``profile``, the loop over the messages runs under cProfile, its stats written there.
    """
    from twisted.internet import defer
    from twisted.internet.task import Clock

    from bench.messages import generate
    from bench.realistic import CHANNEL, PATIENTS, channels
    from bench.systems import Engine, EngineSetup
    from engine.channels.build import build_channel
    from engine.channels.intake import Intake
    from engine.config import load_config

    path = folder / "channels.yaml"
    setup = EngineSetup(channels=channels(9, str(folder / "archive")))
    path.write_text(Engine("engine", "engine", "process", setup).config(9, folder))
    config = load_config(path)
    store, reactor, running = CollectingStore(defer), Clock(), {}
    index = next(i for i, channel in enumerate(config.channels) if channel.name == CHANNEL)
    channel = build_channel(
        config, index, store=store, reactor=reactor, channels=running, tables={}, delivery=False
    )
    running[CHANNEL] = channel
    channel.notify()  # a pass finds nothing left: the channel processes at intake from now on
    intake = Intake(
        config.listeners[0],
        config.channels_for(config.listeners[0].name),
        store,
        config.engine,
        reactor=reactor,
        running=running,
    )
    templates = generate(200, patients=PATIENTS)
    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        profiler.enable()
    for n in range(messages):
        intake.handle(templates[n % len(templates)].render(b"CPU%08d" % n), "127.0.0.1:2575")
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    processed = sum(1 for row in store.rows if str(row.status) == "QUEUED" and len(row.deliveries or ()) == 3)
    print(f"{processed} of {len(store.rows)} rows processed at intake, each with 3 deliveries")


if __name__ == "__main__":
    main()
