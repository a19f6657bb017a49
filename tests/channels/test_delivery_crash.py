"""A SIGKILL of the engine while it drains a backlog: nothing lost, at most one duplicate per destination.

The real engine (``python -m engine run``) drains a backlog queued for two MLLP partners in this
process, which record every message they receive; it is killed at two seeded random points of
the drain, started again each time, and left to finish. The delivery in flight at the kill is the only one a
partner may get twice, and the store marks it a possible duplicate.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import main as cli
from engine.model import NewDelivery, Status
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.schema import deliveries, message_events
from tests.fakes.messages import new_message
from tests.fakes.partner import RecordingPartner

PROJECT = Path(__file__).resolve().parents[2]
BACKLOG = 2000
DESTINATIONS = ("a", "b")
WAIT_SECONDS = 20  # each wait (a kill point, the drain) gives up after this


def _config(folder: Path, partners: dict[str, RecordingPartner]) -> Path:
    destinations = "".join(
        f"      - {{name: {name}, type: mllp, host: 127.0.0.1, port: {partner.port}}}\n"
        for name, partner in partners.items()
    )
    path = folder / "channels.yaml"
    path.write_text(
        "engine:\n  data_dir: data\n"
        'listeners:\n  - name: main\n    endpoint: "tcp:0:interface=127.0.0.1"\n'
        'channels:\n  - name: out\n    source: main\n    accept: {types: ["*"]}\n'
        f"    destinations:\n{destinations}"
    )
    return path


def _backlog(url: str) -> list[str]:
    """Store BACKLOG messages queued for every destination; their control ids in queue order."""
    control_ids = [f"M{n:05d}" for n in range(BACKLOG)]
    rows = []
    for control_id in control_ids:
        raw = f"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|{control_id}|P|2.5.1\r"
        raw += "PID|1||12345^^^PMS^MR||DOE^JANE\r"
        queued = tuple(NewDelivery(d, Status.QUEUED, control_id, raw.encode()) for d in DESTINATIONS)
        rows.append(new_message(raw.encode(), channel="out", status=Status.QUEUED, deliveries=queued))
    engine = create_engine_for(url)
    try:
        upgrade(engine)
        MessageRepository(engine).insert(rows)
    finally:
        engine.dispose()
    return control_ids


def _start(folder: Path, config: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }
    with (folder / "engine.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "-c", str(config), "--workers", "0"],
            stdout=log,
            stderr=log,
            cwd=folder,
            env=env,
        )


def _wait(condition, what: str, folder: Path, step: float) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            log = (folder / "engine.log").read_text()
            raise AssertionError(f"{what} within {WAIT_SECONDS} s; engine log:\n{log}")
        time.sleep(step)


def _unsent(engine: sa.Engine) -> int:
    """How many deliveries are not SENT yet."""
    with engine.connect() as connection:
        return connection.scalar(
            sa.select(sa.func.count()).select_from(deliveries).where(deliveries.c.status != Status.SENT)
        )


def _in_doubt(engine: sa.Engine) -> dict[str, list[tuple[int, str]]]:
    """(message id, control id) of each delivery whose history says "possible duplicate", by destination."""
    d, e = deliveries.c, message_events.c
    query = (
        sa.select(d.destination, d.message_id, d.control_id)
        .join_from(
            message_events, deliveries, (e.message_id == d.message_id) & (e.destination == d.destination)
        )
        .where(e.detail.contains("possible duplicate"))
        .order_by(e.id)
    )
    marked = collections.defaultdict(list)
    with engine.connect() as connection:
        for destination, message_id, control_id in connection.execute(query):
            marked[destination].append((message_id, control_id))
    return marked


def _twice_per_crash(received: list[str], ends: list[int]) -> list[list[str]]:
    """For each crash, what arrived again after it: ``ends`` are how many had arrived at each kill."""
    seen = set(received[: ends[0]])
    again = []
    for start, end in zip(ends, [*ends[1:], len(received)]):
        segment = received[start:end]
        again.append(sorted(set(segment) & seen))
        seen.update(segment)
    return again


def test_a_kill_9_mid_drain_loses_nothing_and_sends_at_most_the_one_in_flight_twice(tmp_path):
    """SIGKILL twice mid-drain, then a drain to the end: every message arrives at both partners.

    A partner gets at most one message again after each crash, and its delivery's history says
    "possible duplicate" (shown by ``hl7engine messages show``).
    """
    seed = random.randrange(1 << 32)
    chosen = random.Random(seed)
    first = chosen.randint(BACKLOG // 10, BACKLOG * 4 // 10)
    kills = [first, chosen.randint(first + BACKLOG // 10, BACKLOG * 3 // 4)]
    where = f"seed {seed}, kills when partner a had {kills}"
    url = f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}"
    partners = {name: RecordingPartner() for name in DESTINATIONS}
    store = None
    try:
        config = _config(tmp_path, partners)
        control_ids = _backlog(url)
        ends = {name: [] for name in partners}
        for kill_at in kills:
            engine = _start(tmp_path, config)
            _wait(
                lambda at=kill_at: partners["a"].count() >= at,
                f"{where}: partner a got {kill_at}",
                tmp_path,
                0.001,
            )
            engine.send_signal(signal.SIGKILL)
            engine.wait(timeout=10)
            for name, partner in partners.items():
                ends[name].append(partner.count())
            assert ends["a"][-1] < BACKLOG, f"{where}: the backlog was drained before the kill"
        store = create_engine_for(url)
        engine = _start(tmp_path, config)
        try:
            _wait(
                lambda: _unsent(store) == 0, f"{where}: every delivery SENT after the restart", tmp_path, 0.05
            )
        finally:
            engine.send_signal(signal.SIGKILL)
            engine.wait(timeout=10)

        marked = _in_doubt(store)
        for name, partner in partners.items():
            received = partner.received
            assert set(received) == set(control_ids), f"{where}: partner {name} lost messages"
            again = _twice_per_crash(received, ends[name])
            assert all(len(twice) <= 1 for twice in again), f"{where}: partner {name} got again {again}"
            assert len(marked[name]) <= len(kills), f"{where}: {name}: marked {marked[name]}"
            duplicates = {control_id for twice in again for control_id in twice}
            assert duplicates <= {c for _, c in marked[name]}, f"{where}: {name}: {duplicates} not marked"
        shown = [message_id for found in marked.values() for message_id, _ in found][:1]
        for message_id in shown:
            result = CliRunner().invoke(cli, ["messages", "show", str(message_id), "--db", url])
            assert result.exit_code == 0 and "possible duplicate" in result.output, result.output
    finally:
        if store is not None:
            store.dispose()
        for partner in partners.values():
            partner.close()
