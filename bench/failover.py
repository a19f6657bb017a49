"""Failover at bench size: three nodes on one PostgreSQL database, the queue holder SIGKILLed mid-stream.

Run: ``python bench/failover.py`` (20,000 messages on 8 connections; ``--quick``: 3,000 on 6). A
fresh database is made on ``--postgres`` and dropped afterwards. Three engines (one config with
``engine.cluster``, lease ``--lease-seconds``) share it; two recording partners are the channel's
two mllp destinations. The senders spread their connections over the nodes and fail over to the
next node when theirs dies; once ``--kill-at`` of the messages were acknowledged, the node holding
the first destination's queue is SIGKILLed. The report (printed, and written to
``bench/results/failover.md``) gives the intake rate, how long the killed node's queue took to move
(its lease, and the next message at its partner), what the senders resent, what a partner got
twice (and whether the store marks it a possible duplicate), messages lost, and the order.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root on the path, as for bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cluster  # noqa: E402 - after the path is set
from bench.stores import fresh_database, postgres_unreachable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def report(outcome: cluster.Outcome, plan: cluster.Plan, database: str, engine_root: Path) -> str:
    """The markdown report of one run."""
    tally, found = outcome.tally, outcome.report
    revision = subprocess.run(
        ["git", "-C", str(engine_root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    engine = (
        f"the work tree at {revision}" if engine_root == ROOT else f"{engine_root} ({revision or 'no git'})"
    )
    renew = plan.lease_seconds / 3
    command = " ".join(["python bench/failover.py", *sys.argv[1:]])
    lines = [
        "# Failover: three nodes on one PostgreSQL, one SIGKILLed mid-stream",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, engine from {engine},"
        f" database {database} (dropped afterwards); {os.cpu_count()} cores, load average"
        f" {os.getloadavg()[0]:.1f} at the end (other work on the machine slows every figure).",
        f"{plan.nodes} nodes, {plan.connections} sender connections,"
        f" {plan.connections * plan.per_connection:,} messages, lease {plan.lease_seconds:g} s"
        f" (renewed every {renew:.2f} s), kill after"
        f" {plan.kill_at:.0%} of the ACKs. Command: `{command}`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| acknowledged | {found.acknowledged:,} in {outcome.load_seconds:.1f} s"
        f" ({outcome.intake_rate:,.0f} msg/s over the nodes) |",
        "| msg/s before the kill / after it (on the nodes left) | {:,.0f} / {:,.0f} |".format(
            *outcome.rates_around_the_kill()
        ),
        f"| drained after the last ACK | {outcome.drain_seconds:.1f} s |",
        f"| node killed | {outcome.killed} (held {_keys(outcome.held_before, outcome.killed)}) |",
        f"| queue lease moved to another node | {cluster.seconds_text(outcome.lease_moved)} after the kill |",
        f"| senders | {tally.failovers} failovers, {tally.resent} messages resent, {tally.refused} refused |",
        f"| stored twice (a resend of a message stored before the kill) | {found.stored_twice} |",
    ]
    for destination in found.destinations:
        name = destination.name
        lines += [
            f"| {name}: SENT / received | {destination.sent:,} / {destination.received:,} |",
            f"| {name}: lost (acknowledged, never received) | {len(found.lost[name])} |",
            f"| {name}: received more often than stored | {len(destination.again)} {destination.again[:3]}"
            f" ({len(destination.unmarked)} not marked possible duplicate) |",
            f"| {name}: order | {destination.order_problem or 'as delivery ids'} |",
            f"| {name}: next message after the kill (past {cluster.IN_FLIGHT_GRACE:g} s) |"
            f" {cluster.seconds_text(destination.first_after_kill)} |",
        ]
    lines += [
        "",
        "Leases after the drain: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.held_after.items())),
    ]
    return "\n".join(lines) + "\n"


def _keys(held: dict[str, str | None], node: str) -> str:
    return ", ".join(sorted(key for key, holder in held.items() if holder == node)) or "no lease"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--lease-seconds", type=float, default=3.0)
    parser.add_argument("--kill-at", type=float, default=1 / 3, help="share of the ACKs before the kill")
    parser.add_argument("--drain-seconds", type=float, default=300.0)
    parser.add_argument("--pace-seconds", type=float, default=0.0, help="each sender's pause after an ACK")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="the partners' pause before each ACK")
    parser.add_argument(
        "--duplicate-window", type=float, help="the channel's duplicate_window_seconds (default: off)"
    )
    parser.add_argument("--quick", action="store_true", help="3,000 messages on 6 connections")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--engine-root",
        type=Path,
        default=ROOT,
        help="run the engine package in DIR/engine (default: this tree)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "failover.md")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.messages, arguments.connections = 3_000, 6
    problem = postgres_unreachable(arguments.postgres)
    if problem is not None:
        print(problem)
        return 2
    plan = cluster.Plan(
        nodes=arguments.nodes,
        connections=arguments.connections,
        per_connection=arguments.messages // arguments.connections,
        lease_seconds=arguments.lease_seconds,
        kill_at=arguments.kill_at,
        drain_seconds=arguments.drain_seconds,
        pace_seconds=arguments.pace_seconds,
        answer_delay=arguments.answer_delay,
        duplicate_window=arguments.duplicate_window,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-failover-") as folder,
        fresh_database(arguments.postgres) as db,
    ):
        outcome = cluster.run(Path(folder), db.url, plan, arguments.engine_root, progress=print)
    text = report(outcome, plan, db.name, arguments.engine_root)
    print(text)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
