"""Scenario (2), end to end: intake -> filter -> transforms -> an mllp destination -> SENT.

The destination is a receiver the benchmark runs.

Each row starts its own downstream receiver (``servers/downstream.py``, a process of its own
that ACKs AA and records every control id with its receive time) and an engine whose one
channel filters, transforms and sends everything to it. The load is scenario (1)'s. Besides
intake, a row reports what reached the receiver within the measured window, what was still
waiting in the engine at the window's end, and, after the engine was given up to
``--drain-seconds`` to deliver the rest: the SENT deliveries in the store (they must equal the
messages acknowledged) and whether the receiver got them in the order of the messages' ids.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from bench.harness import Options, Row, both, measure, row_folder
from bench.stores import DeliveryWatch, drain_figures, probe, sqlite_url
from bench.systems import SERVERS, EngineSetup, RunContext, ServerProcess, System, free_port, python_env

CHANNEL, DESTINATION = "end-to-end", "downstream"
LABEL = "hl7engine, SQLite, end to end"

TABLES = {
    "facilities": {
        "inline": {"NORTHCLINIC": "NORTH", "SOUTHCLINIC": "SOUTH", "GENHOSP": "GH", "CENTRALLAB": "LAB"}
    }
}


def channels(receiver_port: int) -> tuple[dict, ...]:
    """One channel: two filters every generated message passes, four transforms, the mllp destination.

    The destination has the default queue: in order.
    """
    return (
        {
            "name": CHANNEL,
            "source": "bench",
            "accept": {"types": ["*"]},
            "filters": [
                {"field": "MSH-11", "in": ["P", "T"]},
                {"not": {"field": "PID-8", "equals": "U"}},
            ],
            "transforms": [
                {"set": {"field": "MSH-5", "value": "DOWNSTREAM"}},
                {"set": {"field": "MSH-6", "value": "BENCH"}},
                {"map": {"field": "MSH-4", "table": "facilities", "on_miss": "keep"}},
                {"case": {"field": "PID-5.1", "to": "upper"}},
            ],
            "destinations": [
                {"name": DESTINATION, "type": "mllp", "host": "127.0.0.1", "port": receiver_port}
            ],
        },
    )


class Downstream:
    """The receiver process on a free port of 127.0.0.1; what it received can be read once it is stopped."""

    def __init__(self, folder: Path, *, answer_delay: float = 0.0):
        self.port = free_port()
        self.record = folder / "downstream-received.txt"
        argv = [
            sys.executable,
            str(SERVERS / "downstream.py"),
            "--port",
            str(self.port),
            "--record",
            str(self.record),
            "--answer-delay",
            str(answer_delay),
        ]
        self.server = ServerProcess(
            argv, cwd=SERVERS, env=python_env(), port=self.port, log_path=folder / "downstream.log"
        )
        try:
            self.server.wait_ready()
        except Exception:
            self.server.stop()
            raise

    def close(self) -> None:
        """SIGTERM: the receiver writes its record and exits (idempotent)."""
        self.server.stop()

    def received(self) -> list[tuple[float, str]]:
        """(monotonic receive time, control id) of every message, in order of receipt."""
        if not self.record.exists():
            raise RuntimeError(
                f"the downstream receiver wrote no record (exit {self.server.exit_code}): "
                f"{self.server.log_tail()}"
            )
        lines = self.record.read_text().splitlines()
        return [
            (float(moment), control_id) for moment, _, control_id in (line.partition(" ") for line in lines)
        ]


def order_problem(sent: list[str], received: list[str]) -> str | None:
    """None when the receiver got the SENT messages as sent; else how what it got differs.

    As sent: exactly the SENT messages, each once, in message id order.
    """
    if received == sent:
        return None
    twice = len(received) - len(set(received))
    first = next((i for i, (a, b) in enumerate(zip(sent, received)) if a != b), min(len(sent), len(received)))
    return (
        f"first difference at position {first:,}; {len(received):,} received, {len(sent):,} SENT,"
        f" {twice:,} received more than once"
    )


def measure_row(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    *,
    store_url: str | None = None,
    label: str = LABEL,
    on_window=None,
) -> Row:
    """One end-to-end row, on ``store_url`` (default: SQLite in the row's folder).

    ``on_window`` works as for ``measure``.
    """
    with (
        row_folder(options, f"bench-e2e-{connections}-") as folder,
        contextlib.closing(Downstream(folder)) as receiver,
    ):
        url = store_url or sqlite_url(folder / "hl7engine.db")
        engine = system.configured(
            label, EngineSetup(channels=channels(receiver.port), tables=TABLES, store_url=url)
        )
        watch = DeliveryWatch(url, CHANNEL, DESTINATION, options.drain_seconds)
        row = measure(
            scenario, engine, connections, options, context, on_window=both(watch.on_window, on_window)
        )
        receiver.close()
        if row.status != "ok":
            return row
        with probe(url) as store:
            statuses = store.deliveries(CHANNEL, DESTINATION)
            sent = store.sent_in_order(CHANNEL, DESTINATION)
        received = receiver.received()
    window_end = watch.times["start"] + row.seconds
    in_window = sum(1 for moment, _ in received if watch.times["start"] <= moment < window_end)
    row.observed.update(watch.figures())
    row.observed.update(
        {
            "delivered_rate": in_window / row.seconds if row.seconds > 0 else 0.0,
            "delivered_in_window": in_window,
            "deliveries": statuses,
            "sent": statuses.get("SENT", 0),
            "downstream_received": len(received),
            "order_problem": order_problem(sent, [control_id for _, control_id in received]),
        }
    )
    return row


def figures(row: Row) -> dict[str, str]:
    """The end-to-end columns of the report."""
    seen = row.observed
    if "sent" not in seen:
        return {}
    accepted = row.acknowledged
    return {
        "delivered msg/s (window)": f"{seen['delivered_rate']:,.0f}",
        **drain_figures(seen),
        "SENT / acknowledged": f"{seen['sent']:,} / {accepted:,}"
        + (" (equal)" if seen["sent"] == accepted else " (NOT equal)"),
        "downstream order": "as message ids" if seen["order_problem"] is None else seen["order_problem"],
    }
