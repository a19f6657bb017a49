"""Two processes writing one SQLite store: how long intake's adds wait while the other commits chunks.

One process adds messages as eight senders would (one add in flight each, the next as soon as
the last fired), the other commits chunks of ``--chunk`` messages on its store's writer thread
back to back, as a worker's record destination does. Both are ``MessageStore``s of the engine
found in each ``--root`` (default: this work tree), on a fresh file per run; runs alternate
between the roots, ``--pairs`` times. Printed per run: the adds' rate, latency (p50, p99, max),
the intake process's CPU per add, and the chunks the other process committed meanwhile. The
intake's store goes ahead of the other at the lock (``ahead=True``) where the engine knows how.

    python bench/writer_turns.py --roots /path/before,/path/after --pairs 3 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

#: Intake's senders, each with one add in flight.
SENDERS = 8
#: Seconds between the processes' start and the measured window (both stores started by then).
SETTLE_SECONDS = 5.0


def _role_main(role: str, url: str, start_at: float, seconds: float, chunk: int) -> None:
    """One process: ``intake`` (senders' adds) or ``chunker`` (writer calls back to back)."""
    from datetime import UTC, datetime

    from twisted.internet import defer, reactor

    from engine.model import NewMessage, Status
    from engine.store.message_store import MessageStore

    try:  # the intake's process goes ahead of the others at the lock (an engine that knows how)
        store = MessageStore(url, reactor=reactor, shared=True, ahead=role == "intake")
    except TypeError:  # an engine from before intake went ahead, or before the shared store's lock
        try:
            store = MessageStore(url, reactor=reactor, shared=True)
        except TypeError:
            store = MessageStore(url, reactor=reactor)
    store.start()
    raw = b"MSH|^~\\&|BENCH|A|B|C|20240101||ADT^A01|%d|P|2.5\rPID|1||%d^^^H||DOE^JOHN\r" + b"X" * 1000
    counter = iter(range(10**9))

    def message() -> NewMessage:
        n = next(counter)
        return NewMessage(
            raw=raw % (n, n),
            received_at=datetime.now(UTC),
            listener=role,
            peer="bench",
            status=Status.RECEIVED,
            control_id=str(n),
        )

    end_at = start_at + seconds
    latencies: list[float] = []
    chunks = [0]

    @defer.inlineCallbacks
    def sender():
        while time.time() < end_at:
            asked = time.monotonic()
            yield store.add([message()])
            if time.time() >= start_at:
                latencies.append(time.monotonic() - asked)

    @defer.inlineCallbacks
    def chunker():
        while time.time() < end_at + 0.5:
            yield store.write(store.repository.insert_groups, [([message() for _ in range(chunk)], None)])
            if start_at <= time.time() < end_at:
                chunks[0] += 1

    @defer.inlineCallbacks
    def run():
        yield _sleep(reactor, max(0.0, start_at - time.time() - (0.2 if role == "chunker" else 0.0)))
        cpu = time.process_time()
        work = [sender() for _ in range(SENDERS)] if role == "intake" else [chunker()]
        yield defer.gatherResults(work)
        cpu = time.process_time() - cpu
        latencies.sort()
        result = {"chunks": chunks[0], "adds": len(latencies), "cpu_us_per_add": 0.0}
        if latencies:
            result.update(
                p50_ms=latencies[len(latencies) // 2] * 1000,
                p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
                max_ms=latencies[-1] * 1000,
                cpu_us_per_add=cpu / len(latencies) * 1e6,
            )
        print(json.dumps(result), flush=True)
        yield store.stop()
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()


def _sleep(reactor, seconds: float):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


def _one_run(root: Path, seconds: float, chunk: int) -> dict:
    """Both processes on a fresh store of the engine in ``root``; intake's figures and the chunks."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(HERE)])}
    with tempfile.TemporaryDirectory(prefix="writer-turns-") as folder:
        url = f"sqlite:///{folder}/store.db"
        # The schema first, so that the two processes do not race to create it.
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from engine.store.db import create_engine_for as c; "
                f"from engine.store.migrations import upgrade; upgrade(c({url!r}))",
            ],
            env=env,
            check=True,
        )
        start_at = time.time() + SETTLE_SECONDS
        args = [url, str(start_at), str(seconds), str(chunk)]
        processes = {
            role: subprocess.Popen(
                [sys.executable, __file__, "--role", role, *args], env=env, stdout=subprocess.PIPE, text=True
            )
            for role in ("chunker", "intake")
        }
        out = {role: json.loads(p.communicate(timeout=seconds + 60)[0]) for role, p in processes.items()}
    return {**out["intake"], "chunks_per_s": out["chunker"]["chunks"] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--roots", default=str(HERE), help="comma-separated folders holding engine/")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk", type=int, default=40, help="messages a chunk (about 5 ms here)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    options, rest = parser.parse_known_args()
    if options.role:
        url, start_at, seconds, chunk = rest
        _role_main(options.role, url, float(start_at), float(seconds), int(chunk))
        return
    roots = [Path(root) for root in options.roots.split(",")]
    for pair in range(options.pairs):
        for root in roots:
            load = os.getloadavg()[0]
            r = _one_run(root, options.seconds, options.chunk)
            rate = r["adds"] / options.seconds
            latency = (
                f"p50 {r.get('p50_ms', 0):.1f} p99 {r.get('p99_ms', 0):.1f} max {r.get('max_ms', 0):.1f} ms"
            )
            other = f"{r['chunks_per_s']:,.0f} chunks/s ({r['chunks_per_s'] * options.chunk:,.0f} msg/s)"
            print(
                f"pair {pair + 1} {root}: adds {rate:,.0f}/s, {latency}, {r['cpu_us_per_add']:,.0f} µs CPU"
                f" an add; other process {other}; load average {load:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
