"""The downstream receiver of the end-to-end scenario: ACKs every message AA and records what it received, in order.

The ceiling's framer (``ceiling.py``) with MSA-2 the message's control id, as the engine's mllp
destination checks it. Every control id is kept in memory with its receive time on the
system-wide monotonic clock (the one the load generator measures its window with); on SIGTERM
they are written to ``--record``, one ``<seconds> <control id>`` line per message, in order of
receipt. ``--answer-delay S`` holds each ACK back S seconds (a slow partner). Run:
``python bench/servers/downstream.py --port N --record FILE``.
"""  # noqa: E501 - the first line stays whole: it is the --help description (argparse below)

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from ceiling import FixedAck, serve

RECEIVED: list[tuple[float, bytes]] = []


class Recording(FixedAck):
    """ACKs like the ceiling, under its own name, and notes each control id with the time it arrived."""

    ack_head = b"\x0bMSH|^~\\&|DOWNSTREAM|BENCH|||20260101000000||ACK|1|P|2.5.1\rMSA|AA|"

    #: Seconds each ACK is held back (``--answer-delay``): a slow partner, so that a queue has a backlog.
    delay = 0.0

    def answer(self, control_id: bytes) -> None:
        RECEIVED.append((time.monotonic(), control_id))
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, super().answer, control_id)
        else:
            super().answer(control_id)


def write_record(path: Path) -> None:
    """Every control id received, in order, with its receive time; written whole, then renamed into place."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        out.writelines(b"%.6f %s\n" % (moment, control_id) for moment, control_id in RECEIVED)
    partial.replace(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--answer-delay", type=float, default=0.0, help="seconds before each ACK")
    arguments = parser.parse_args()
    Recording.delay = arguments.answer_delay
    asyncio.run(serve(arguments.port, Recording))
    write_record(arguments.record)
