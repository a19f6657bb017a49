"""A kill -9 of the engine loses no message whose add() had fired (durability="process")."""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from engine.store.db import create_engine_for
from engine.store.schema import messages

PROJECT = Path(__file__).resolve().parents[2]
MAX_ADDS = 5000
ROUND_SECONDS = 30

# Adds two messages every 2 ms without waiting for earlier adds (so groups form) and prints each
# id only once its Deferred has fired.
WRITER = f"""
import sys
from datetime import datetime, timezone
from twisted.internet import reactor, task
from engine.model import NewMessage, Status
from engine.store.message_store import MessageStore

store = MessageStore(sys.argv[1], reactor=reactor)
store.start()
added = 0

def committed(ids):
    sys.stdout.write("".join(f"{{i}}\\n" for i in ids))
    sys.stdout.flush()

def feed():
    global added
    if added < {MAX_ADDS}:
        added += 1
        message = NewMessage(raw=b"MSH|^~\\\\&|CRASH|%d\\r" % added, received_at=datetime.now(timezone.utc),
                             listener="crash", peer="test", status=Status.RECEIVED, control_id=str(added))
        store.add([message, message]).addCallback(committed)

task.LoopingCall(feed).start(0.002)
reactor.run()
"""


def _run_and_kill(url: str, after_ids: int, log: Path) -> list[int]:
    """Start the writer, SIGKILL it once it printed ``after_ids`` ids (or time ran out); the ids printed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=PROJECT
        )
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    printed: list[int] = []
    deadline = time.monotonic() + ROUND_SECONDS
    while len(printed) < after_ids and time.monotonic() < deadline and process.poll() is None:
        try:
            printed.append(int(lines.get(timeout=0.1)))
        except queue.Empty:
            continue
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get()
        if line.endswith(b"\n"):
            printed.append(int(line))
    return printed


def test_kill_9_loses_no_committed_message(store_url, tmp_path):
    """Every id printed after its add() fired is in the database after SIGKILL at a random moment (twice)."""
    seed = random.randrange(1 << 32)
    chosen = random.Random(seed)
    log = tmp_path / "writer.log"
    for round_ in range(2):
        printed = _run_and_kill(store_url, chosen.randint(1, 400), log)
        assert printed, f"round {round_}: the writer printed no id; its stderr:\n{log.read_text()}"
        engine = create_engine_for(store_url)
        with engine.connect() as connection:
            present = set(connection.scalars(sa.select(messages.c.id).where(messages.c.id.in_(printed))))
        engine.dispose()
        assert sorted(set(printed) - present) == [], f"round {round_}, seed {seed}"
