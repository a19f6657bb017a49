"""Several engine nodes on one PostgreSQL store, senders that fail over between them, one node SIGKILLed.

The pieces the failover test (``tests/channels/test_failover.py``) and the failover benchmark
(``bench/failover.py``) share:

- ``write_config``: one ``channels.yaml`` for every node, with ``engine.cluster``; each node's name,
  MLLP port and data folder come from environment variables (``${HL7ENGINE_NODE}`` ...).
- ``Node``: ``python -m engine run`` with that config, its log in its own folder.
- ``Senders`` (``bench/senders.py``): threads, each one connection with one message in flight,
  dealt out round-robin over the nodes' ports, failing over to the next node when theirs dies.
- ``Receivers``: one recording MLLP partner process per destination (``servers/downstream.py``):
  every control id with its monotonic arrival time.
- ``examine``: after the drain, what the store and the partners say: acknowledged messages not
  delivered, deliveries a partner got more often than the store holds them (and whether the store
  marks them possible duplicates), each partner's order against the deliveries' id order, and how
  long after the kill the killed node's queues moved on.
"""

from __future__ import annotations

import collections
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from bench.end_to_end import Downstream
from bench.senders import Senders, SenderTally
from bench.systems import ServerProcess, free_port, python_env

CHANNEL = "failover"
DESTINATIONS = ("a", "b")
# What reaches a partner this soon after the kill was on its way from the killed node already.
IN_FLIGHT_GRACE = 0.1


def queue_key(destination: str) -> str:
    """The lease key of one destination's queue (as ``engine.channels.leases.queue_key`` names it)."""
    return f"queue:{CHANNEL}/{destination}"


def write_config(
    folder: Path,
    store_url: str,
    partners: dict[str, int],
    *,
    lease_seconds: float,
    poll_seconds: float = 0.5,
    duplicate_window: float | None = None,
) -> Path:
    """The one channels.yaml of every node: a channel sending everything to an mllp destination per partner.

    The node's name, MLLP port and data folder are ``${HL7ENGINE_NODE}``, ``${HL7ENGINE_NODE_PORT}``
    and ``${HL7ENGINE_NODE_DATA}``.
    """
    destinations = "".join(
        f"      - {{name: {name}, type: mllp, host: 127.0.0.1, port: {port}}}\n"
        for name, port in partners.items()
    )
    path = folder / "channels.yaml"
    path.write_text(
        "engine:\n"
        "  data_dir: ${HL7ENGINE_NODE_DATA}\n"
        f'  store: {{url: "{store_url}"}}\n'
        '  cluster: {node: "${HL7ENGINE_NODE}",'
        f" lease_seconds: {lease_seconds}, poll_seconds: {poll_seconds}}}\n"
        "listeners:\n"
        '  - {name: main, endpoint: "tcp:${HL7ENGINE_NODE_PORT}:interface=127.0.0.1"}\n'
        f"channels:\n  - name: {CHANNEL}\n    source: main\n    accept: {{types: ['*']}}\n"
        f"    respond: after_store\n    duplicate_window_seconds: {duplicate_window or 'null'}\n"
        f"    destinations:\n{destinations}"
    )
    return path


class Node:
    """One engine process of the cluster (``python -m engine run``), listening on its own port."""

    def __init__(self, name: str, config: Path, port: int, engine_root: Path):
        self.name = name
        self.port = port
        self.folder = config.parent / name
        self.folder.mkdir(exist_ok=True)
        env = {
            **python_env(engine_root),
            "HL7ENGINE_NODE": name,
            "HL7ENGINE_NODE_PORT": str(port),
            "HL7ENGINE_NODE_DATA": str(self.folder / "data"),
        }
        # One process a node, whatever the machine's cores would make --workers auto.
        argv = [sys.executable, "-m", "engine", "run", "-c", str(config), "--workers", "0"]
        self.server = ServerProcess(
            argv, cwd=engine_root, env=env, port=port, log_path=self.folder / "engine.log"
        )
        self.killed_at: float | None = None

    def wait_ready(self) -> None:
        """Return once the node accepts MLLP connections (raise with its log when it died)."""
        self.server.wait_ready()

    def kill(self) -> float:
        """SIGKILL: the node stops at once, nothing cleaned up; the monotonic time of the kill."""
        self.killed_at = time.monotonic()
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=30)
        return self.killed_at

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a timeout); nothing when it was killed already."""
        self.server.stop()

    def log(self) -> str:
        """What the node logged."""
        return self.server.log_path.read_text(errors="replace")


class Receivers:
    """A recording partner process per destination (AA for everything, each control id noted in order)."""

    def __init__(
        self, folder: Path, *, answer_delay: float = 0.0, destinations: tuple[str, ...] = DESTINATIONS
    ):
        self.partners: dict[str, Downstream] = {}
        try:
            for name in destinations:
                partner_folder = folder / f"partner-{name}"
                partner_folder.mkdir(exist_ok=True)
                self.partners[name] = Downstream(partner_folder, answer_delay=answer_delay)
        except Exception:
            self.close()
            raise

    @property
    def ports(self) -> dict[str, int]:
        return {name: partner.port for name, partner in self.partners.items()}

    def close(self) -> None:
        """Stop every partner; each writes what it received."""
        for partner in self.partners.values():
            partner.close()

    def received(self) -> dict[str, list[tuple[float, str]]]:
        """(monotonic arrival time, control id) per destination, in order of arrival (after close)."""
        return {name: partner.received() for name, partner in self.partners.items()}


class StoreView:
    """What the store says about the cluster and the channel's deliveries (plain SQL, own connections)."""

    def __init__(self, url: str):
        self._engine = sa.create_engine(url, poolclass=NullPool)

    def close(self) -> None:
        self._engine.dispose()

    def _rows(self, sql: str, **params) -> list[tuple]:
        with self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]

    def holders(self) -> dict[str, str | None]:
        """Lease key -> the name of the node holding it (None: free), for unexpired leases."""
        rows = self._rows(
            "SELECT l.key, n.name FROM leases l LEFT JOIN nodes n ON n.id = l.holder"
            " WHERE l.holder IS NOT NULL AND l.expires_at > CURRENT_TIMESTAMP"
        )
        return dict(rows)

    def sent(self, destination: str) -> int:
        """The destination's SENT deliveries."""
        rows = self._rows(
            "SELECT count(*) FROM deliveries WHERE channel = :channel AND destination = :destination"
            " AND status = 'SENT'",
            channel=CHANNEL,
            destination=destination,
        )
        return rows[0][0]

    def unsent(self) -> int:
        """Messages not yet through the channel, and deliveries not yet SENT."""
        waiting = self._rows(
            "SELECT (SELECT count(*) FROM messages WHERE status = 'RECEIVED')"
            " + (SELECT count(*) FROM deliveries WHERE status <> 'SENT' AND superseded_at IS NULL)"
        )
        return waiting[0][0]

    def stored(self) -> collections.Counter[str]:
        """How many stored messages have each control id (a sender's resend can store one twice)."""
        return collections.Counter(
            control_id for (control_id,) in self._rows("SELECT control_id FROM messages")
        )

    def sent_in_order(self, destination: str) -> list[str]:
        """Control ids of the destination's SENT deliveries, in delivery id order."""
        rows = self._rows(
            "SELECT control_id FROM deliveries WHERE channel = :channel AND destination = :destination"
            " AND status = 'SENT' AND superseded_at IS NULL ORDER BY id",
            channel=CHANNEL,
            destination=destination,
        )
        return [control_id for (control_id,) in rows]

    def in_doubt(self, destination: str) -> set[str]:
        """Control ids of the destination's deliveries whose history says "possible duplicate"."""
        rows = self._rows(
            "SELECT d.control_id FROM message_events e JOIN deliveries d"
            " ON d.message_id = e.message_id AND d.destination = e.destination"
            " WHERE d.channel = :channel AND d.destination = :destination"
            " AND e.detail LIKE '%possible duplicate%'",
            channel=CHANNEL,
            destination=destination,
        )
        return {control_id for (control_id,) in rows}


def wait_for(condition, seconds: float, what: str, step: float = 0.05) -> float:
    """Poll ``condition`` until true; the seconds it took. AssertionError naming ``what`` after a timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(step)
    return time.monotonic() - start


@dataclass
class DestinationReport:
    """One destination after the drain."""

    name: str
    sent: int  # SENT deliveries in the store
    received: int  # messages the partner got
    again: list[str]  # a control id for each arrival beyond what the store holds of it
    unmarked: list[str]  # of those, the ones the store does not mark "possible duplicate"
    order_problem: str | None  # None: the partner got them in delivery id order
    first_after_kill: float | None  # seconds from the kill to the partner's next arrival (past the grace)


@dataclass
class Report:
    """What a failover run showed."""

    acknowledged: int
    lost: dict[str, list[str]]  # destination -> acknowledged control ids it never got
    stored_twice: int  # control ids stored in two messages (a sender resent one that was stored)
    destinations: list[DestinationReport]


def examine(
    view: StoreView, received: dict[str, list[tuple[float, str]]], acknowledged: set[str], killed_at: float
) -> Report:
    """Compare the partners' records with the store and the senders' ACKs."""
    stored = view.stored()
    lost, reports = {}, []
    for name, arrivals in received.items():
        got = [control_id for _, control_id in arrivals]
        lost[name] = sorted(acknowledged - set(got))
        expected = view.sent_in_order(name)
        counts = collections.Counter(got)
        again = sorted(c for c, n in counts.items() for _ in range(n - stored.get(c, 0)))
        kept, seen = [], collections.Counter()
        for control_id in got:  # the first arrivals of each, as many as the store holds
            seen[control_id] += 1
            if seen[control_id] <= stored.get(control_id, 0):
                kept.append(control_id)
        after = [moment for moment, _ in arrivals if moment > killed_at + IN_FLIGHT_GRACE]
        reports.append(
            DestinationReport(
                name=name,
                sent=len(expected),
                received=len(got),
                again=again,
                unmarked=sorted(set(again) - view.in_doubt(name)),
                order_problem=_order_problem(expected, kept),
                first_after_kill=after[0] - killed_at if after else None,
            )
        )
    return Report(
        acknowledged=len(acknowledged),
        lost=lost,
        stored_twice=sum(1 for n in stored.values() if n > 1),
        destinations=reports,
    )


def _order_problem(expected: list[str], got: list[str]) -> str | None:
    if got == expected:
        return None
    first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    return f"first difference at position {first:,} of {len(expected):,} SENT ({len(got):,} received once)"


@dataclass(frozen=True)
class Plan:
    """The size and timing of a failover run."""

    nodes: int = 3
    connections: int = 6
    per_connection: int = 100
    lease_seconds: float = 3.0
    kill_at: float = 1 / 3  # the kill comes once this share of the messages was acknowledged
    drain_seconds: float = 60.0  # after the load, how long the nodes may take to deliver the rest
    pace_seconds: float = 0.0  # each sender's pause after an ACK (0: full speed)
    answer_delay: float = 0.0  # the partners' pause before each ACK: slow partners, queues with a backlog
    duplicate_window: float | None = None  # the channel's duplicate_window_seconds (None: off)
    start_seconds: float = 60.0


@dataclass
class Outcome:
    """A failover run: the verdict on the store and partners, and the times measured."""

    report: Report
    tally: SenderTally
    killed: str  # the name of the node killed
    held_before: dict[str, str | None]  # lease key -> holder just before the kill
    held_after: dict[str, str | None]  # lease key -> holder once the drain was over
    lease_moved: float | None  # seconds from the kill until the killed node's first queue had a new holder
    load_seconds: float  # from the first message sent to the last ACK
    started: float  # monotonic time of the first message sent
    killed_at: float  # monotonic time of the kill
    drain_seconds: float  # from the last ACK until nothing waited in the store
    logs: dict[str, str]  # node name -> what it logged

    def summary(self) -> str:
        """The figures in a few lines: what was sent, the kill, the takeover, each destination."""
        tally, report = self.tally, self.report
        lines = [
            f"{report.acknowledged:,} acknowledged in {self.load_seconds:.1f} s"
            f" ({self.intake_rate:,.0f} msg/s), drained {self.drain_seconds:.1f} s later",
            f"senders: {tally.failovers} failovers, {tally.resent} resent, {tally.refused} refused;"
            f" {report.stored_twice} stored twice",
            f"killed {self.killed}; leases before {self.held_before}; after {self.held_after}",
            f"lease moved after {seconds_text(self.lease_moved)}",
        ]
        for d in report.destinations:
            lines.append(
                f"{d.name}: {d.sent:,} SENT, {d.received:,} received, {len(d.again)} again {d.again[:3]},"
                f" {len(d.unmarked)} not marked {d.unmarked[:3]}, lost {len(report.lost[d.name])},"
                f" order {d.order_problem or 'as delivery ids'},"
                f" next after the kill {seconds_text(d.first_after_kill)}"
            )
        return "\n".join(lines)

    @property
    def intake_rate(self) -> float:
        """Acknowledged messages per second over the load."""
        return self.report.acknowledged / self.load_seconds if self.load_seconds > 0 else 0.0

    def rates_around_the_kill(self) -> tuple[float, float]:
        """Acknowledged messages per second before the kill, and after it (on the nodes left)."""
        before = sum(1 for moment in self.tally.acknowledged.values() if moment < self.killed_at)
        after = self.report.acknowledged - before
        first, rest = self.killed_at - self.started, self.started + self.load_seconds - self.killed_at
        return (before / first if first > 0 else 0.0, after / rest if rest > 0 else 0.0)


def run(
    folder: Path, store_url: str, plan: Plan, engine_root: Path, *, progress=lambda line: None
) -> Outcome:
    """Start the partners and the nodes, send the load, SIGKILL a node mid-stream, drain, and examine.

    The node killed is the one holding the first destination's queue (node 1 when no node holds a
    lease: an engine without leases in the store).
    """
    receivers = Receivers(folder, answer_delay=plan.answer_delay)
    nodes: list[Node] = []
    view = StoreView(store_url)
    try:
        config = write_config(
            folder,
            store_url,
            receivers.ports,
            lease_seconds=plan.lease_seconds,
            duplicate_window=plan.duplicate_window,
        )
        for number in range(1, plan.nodes + 1):
            node = Node(f"node{number}", config, free_port(), engine_root)
            nodes.append(node)
            node.wait_ready()  # one after the other: the first creates the schema
        progress(f"{plan.nodes} nodes listening on {[node.port for node in nodes]}")
        ports = [node.port for node in nodes]
        senders = Senders(ports, plan.connections, plan.per_connection, pace_seconds=plan.pace_seconds)
        started = time.monotonic()
        senders.start()
        kill_after = int(senders.total * plan.kill_at)
        wait_for(lambda: senders.acknowledged() >= kill_after, plan.start_seconds, f"{kill_after} ACKs")
        # Mid-delivery too: the first destination's queue has sent some already.
        wait_for(lambda: view.sent(DESTINATIONS[0]) > 0, plan.start_seconds, "a first delivery SENT")
        held_before = view.holders()
        victim = next((n for n in nodes if n.name == held_before.get(queue_key(DESTINATIONS[0]))), nodes[0])
        killed_at = victim.kill()
        progress(f"killed {victim.name} after {senders.acknowledged():,} ACKs; leases held: {held_before}")
        lease_moved = _lease_moved(view, victim.name, plan.lease_seconds * 4 + 5)
        if not senders.join(plan.start_seconds + plan.drain_seconds):
            raise AssertionError(f"the senders did not finish; {senders.acknowledged():,} ACKs")
        last_ack = max(senders.tally.acknowledged.values(), default=started)
        wait_for(lambda: view.unsent() == 0, plan.drain_seconds, "every message delivered", step=0.2)
        drained = time.monotonic() - last_ack
        held_after = view.holders()
        for node in nodes:
            node.stop()
        receivers.close()
        report = examine(view, receivers.received(), set(senders.tally.acknowledged), killed_at)
        return Outcome(
            report=report,
            tally=senders.tally,
            killed=victim.name,
            held_before=held_before,
            held_after=held_after,
            lease_moved=lease_moved,
            load_seconds=last_ack - started,
            started=started,
            killed_at=killed_at,
            drain_seconds=drained,
            logs={node.name: node.log() for node in nodes},
        )
    except AssertionError as error:
        logs = "\n".join(f"--- {node.name}\n{node.log()[-4000:]}" for node in nodes)
        raise AssertionError(f"{error}\n{logs}") from error
    finally:
        for node in nodes:
            node.stop()
        receivers.close()
        view.close()


def seconds_text(value: float | None) -> str:
    """A duration for a report: "1.23 s", or "never" for None."""
    return "never" if value is None else f"{value:.2f} s"


def _lease_moved(view: StoreView, victim: str, seconds: float) -> float | None:
    """Seconds until the first destination's queue is held by another node than ``victim`` (None: never)."""
    key = queue_key(DESTINATIONS[0])
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        holder = view.holders().get(key)
        if holder is not None and holder != victim:
            return time.monotonic() - start
        time.sleep(0.05)
    return None
