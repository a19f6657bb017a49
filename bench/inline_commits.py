"""The store's side of intake alone: received messages added one commit at a time, no sockets.

The bench's messages are read by the intake (not timed) into the rows it stores; then they are
added through a real ``MessageStore`` on SQLite (durability ``process``), ``--group`` adds a
commit, each group waiting for its commit before the next, as senders waiting for their ACKs
do. The CPU time of the whole process (reactor, writer thread, SQLite) is printed per message,
with the largest size the WAL had and how often it was seen to shrink (truncated):

    python bench/inline_commits.py [--messages 16000] [--group 1] [--senders] [--engine-root DIR]

``--senders``: the store is told that no connected sender is idle (``wait_for_senders``), as
when every sender waits for its ACK. The first quarter of the messages is warm-up.
``--engine-root DIR`` measures the ``engine/`` package of another checkout (default: this one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, reactor

ROOT = Path(__file__).resolve().parent.parent


class _Rows:
    """A stand-in store for the intake that keeps the rows it is given and commits nothing."""

    def __init__(self):
        self.rows = []

    def add(self, rows, source_file=None):
        self.rows.extend(rows)
        return defer.succeed(list(range(len(rows))))


def received_rows(count: int) -> list:
    """The rows the intake stores for ``count`` of the bench's messages, each with its own control id."""
    from bench.messages import generate
    from engine.channels.intake import Intake
    from engine.channels.spec import ChannelConfig
    from engine.config import EngineSettings, ListenerConfig

    templates = generate(200)
    rows = _Rows()
    channel = ChannelConfig(name="everything", source="main", accept={"types": ["*"]})
    listener = ListenerConfig(name="main", endpoint="tcp:0")
    intake = Intake(listener, [channel], rows, EngineSettings(), reactor=reactor)
    for n in range(count):
        intake.handle(templates[n % len(templates)].render(b"IC%08d" % n), "127.0.0.1:1")
    return rows.rows


@defer.inlineCallbacks
def measure(store, rows: list, group: int, wal: Path):
    """Add the rows ``group`` at a time; print CPU a message, rate, largest WAL and truncations seen."""
    warm = len(rows) // 4
    sizes = []
    started_cpu = started = 0.0
    for start in range(0, len(rows), group):
        if start >= warm and not started:
            started_cpu, started = time.process_time(), time.perf_counter()
        yield defer.gatherResults([store.add([row]) for row in rows[start : start + group]])
        if started and start % 200 < group:
            sizes.append(wal.stat().st_size)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    measured = len(rows) - warm
    shrunk = sum(1 for before, after in zip(sizes, sizes[1:]) if after < before)
    print(
        f"group {group}: {cpu / measured * 1e6:.1f} us CPU a message, {measured / wall:,.0f} msg/s,"
        f" WAL at most {max(sizes) / 1e6:.1f} MB, truncated {shrunk} time(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16000)
    parser.add_argument("--group", type=int, default=1, help="adds a commit (default 1)")
    parser.add_argument("--senders", action="store_true", help="no connected sender is idle")
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="folder holding engine/")
    options = parser.parse_args()
    sys.path[:0] = [str(options.engine_root.resolve()), str(ROOT)]
    from engine import __file__ as engine_file
    from engine.store.message_store import MessageStore

    print(f"engine: {Path(engine_file).parent}")
    rows = received_rows(options.messages)
    folder = Path(tempfile.mkdtemp(prefix="inline-commits-"))
    store = MessageStore(f"sqlite:///{folder / 'store.db'}", reactor=reactor)
    store.start()
    if options.senders:
        store.wait_for_senders(lambda: 0)

    @defer.inlineCallbacks
    def run():
        try:
            yield measure(store, rows, options.group, folder / "store.db-wal")
        finally:
            yield store.stop()
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()


if __name__ == "__main__":
    main()
