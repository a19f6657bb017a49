"""`hl7engine backup`: an online copy of the running engine's SQLite store, and a restore from it.

The engine runs as a process of its own and receives messages over MLLP on loopback while the
backup, another process, copies its store.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main as cli
from engine.errors import StoreError
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.record.ingest import RecordIngestor
from engine.store.backup import backup_store
from engine.store.db import create_engine_for
from engine.store.driver.record_attach import record_file
from engine.store.migrations import upgrade
from tests.fakes.process import ENGINE, adt, launch, start, stop
from tests.fakes.record import NOW, Feeder, hl7, register

SENDERS = 3


def _control_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT control_id FROM messages")}


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


class _Load:
    """Senders that keep sending ADTs over MLLP and note every control id answered AA, in order."""

    def __init__(self, port: int):
        self.port = port
        self.acknowledged: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(n,)) for n in range(SENDERS)]

    def _send(self, worker: int) -> None:
        with MLLPClient("127.0.0.1", self.port, timeout=10) as client:
            for i in range(20_000):  # bounded; the test stops it long before
                if self._stop.is_set():
                    return
                reply = parse_reply(client.request(adt(worker * 100_000 + i)))
                if reply.code == "AA":
                    with self._lock:
                        self.acknowledged.append(reply.control_id)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def so_far(self) -> set[str]:
        with self._lock:
            return set(self.acknowledged)

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def wait_for(self, count: int, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while self.count() < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= count


def test_a_backup_under_load_holds_every_message_acknowledged_before_it(tmp_path):
    """While senders keep the engine busy, `backup` copies a sound store with every message ACKed before it.

    And the engine keeps answering while the copy is made.
    """
    process, port, config = start(tmp_path)
    destination = tmp_path / "backup" / "copy.db"
    destination.parent.mkdir()
    try:
        with _Load(port) as load:
            load.wait_for(300)
            before = load.so_far()
            during_from = load.count()
            copied = subprocess.run(
                [*ENGINE, "backup", str(destination), "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            during = load.count() - during_from
    finally:
        stop(process)
    assert copied.returncode == 0, copied.stderr
    assert "integrity ok" in copied.stdout
    assert _integrity(destination) == "ok"
    assert before <= _control_ids(destination)
    assert during > 0  # the senders were answered while the backup ran
    assert not list(destination.parent.glob("*.partial"))


def test_the_engine_started_on_a_restored_backup_serves_it(tmp_path):
    """Stop, copy the backup (both files) in place, start: its messages are there, later ones are not,
    intake goes on."""
    process, port, config = start(tmp_path)
    store = tmp_path / "data" / "hl7engine.db"
    copy = tmp_path / "copy.db"
    try:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            for n in range(20):
                assert parse_reply(client.request(adt(n))).code == "AA"
            assert CliRunner().invoke(cli, ["backup", str(copy), "-c", str(config)]).exit_code == 0
            for n in range(20, 25):  # after the backup: lost by the restore
                assert parse_reply(client.request(adt(n))).code == "AA"
    finally:
        stop(process)

    for original, copied in ((store, copy), (record_file(store), record_file(copy))):
        for leftover in (original, *(original.with_name(original.name + end) for end in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(copied, original)
    process = launch(config, port)
    try:
        with MLLPClient("127.0.0.1", port, timeout=10) as client:
            assert parse_reply(client.request(adt(99))).code == "AA"
        shown = CliRunner().invoke(cli, ["messages", "list", "--json", "--limit", "100", "-c", str(config)])
    finally:
        stop(process)
    assert shown.exit_code == 0, shown.output
    assert _control_ids(store) == {f"C{n:06d}" for n in [*range(20), 99]}
    assert shown.output.count('"control_id"') == 21


def test_backup_refuses_postgresql_and_points_to_its_tools(tmp_path):
    """A PostgreSQL store is refused (exit 2) with pg_dump and pg_basebackup named."""
    result = CliRunner().invoke(
        cli, ["backup", str(tmp_path / "x.db"), "--db", "postgresql://postgres@127.0.0.1/hl7"]
    )
    assert result.exit_code == 2
    assert "pg_dump" in result.output and "pg_basebackup" in result.output
    assert not (tmp_path / "x.db").exists()


def test_backup_never_overwrites_a_file(tmp_path, sqlite_url):
    """An existing destination is refused (exit 2) and left as it was."""
    upgrade(create_engine_for(sqlite_url))
    destination = tmp_path / "taken.db"
    destination.write_bytes(b"mine")
    result = CliRunner().invoke(cli, ["backup", str(destination), "--db", sqlite_url])
    assert result.exit_code == 2 and "exists" in result.output
    assert destination.read_bytes() == b"mine"
    with pytest.raises(StoreError, match="exists"):
        backup_store(sqlite_url, destination)


def test_a_backup_is_readable_by_its_user_only(tmp_path, sqlite_url):
    """The copy holds what the store holds: 0600, in folders it creates 0700, whatever the umask."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    engine.dispose()
    destination = tmp_path / "backups" / "nightly" / "copy.db"
    previous = os.umask(0o002)
    try:
        backup_store(sqlite_url, destination)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    assert stat.S_IMODE(destination.parent.stat().st_mode) == 0o700
    assert _integrity(destination) == "ok"


def _applied(path: Path) -> list[int]:
    with sqlite3.connect(path) as connection:
        return [
            row[0] for row in connection.execute("SELECT message_id FROM record_applied_messages ORDER BY 1")
        ]


def test_a_backup_copies_the_record_after_the_store_and_forgets_messages_newer_than_its_copy(
    tmp_path, sqlite_url
):
    """The record's file goes to DEST's sibling, copied after the store's: what a message received
    meanwhile left in it is forgotten there, so a store restored from the two applies the message
    that next gets its id, and the record's rows name no message the store's copy lacks."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    for n in range(2):
        register(feed, f"PID|1||P-{n}^^^PMS^PI||DOE^JANE{n}||19700101|F")
    meanwhile = []

    def progress(
        remaining: int, total: int
    ) -> None:  # after a step of the store's copy: its snapshot is taken
        if not meanwhile:
            meanwhile.append(register(feed, "PID|1||P-9^^^PMS^PI||DOE^JOHN||19700101|M"))

    destination = tmp_path / "backups" / "copy.db"
    done = backup_store(sqlite_url, destination, step_pages=1, pause=0, progress=progress)
    assert (done.path, done.record) == (destination, tmp_path / "backups" / "copy-record.db")
    assert _applied(done.record) == [1, 2]
    assert _applied(record_file(Path(engine.url.database))) == [1, 2, 3]
    assert (_integrity(destination), _integrity(done.record)) == ("ok", "ok")
    with sqlite3.connect(done.record) as connection:
        named = connection.execute("SELECT max(message_id) FROM record_patients").fetchone()[0]
    assert named == 2 and stat.S_IMODE(done.record.stat().st_mode) == 0o600
    engine.dispose()

    restored = tmp_path / "restored" / "store.db"
    restored.parent.mkdir()
    shutil.copyfile(destination, restored)
    shutil.copyfile(done.record, record_file(restored))
    engine = create_engine_for(f"sqlite:///{restored}")
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    message_id, result = feed(
        hl7("ADT^A04^ADT_A01", "20240101090000", "PID|1||P-9^^^PMS^PI||DOE^JOHN||19700101|M")
    )
    engine.dispose()
    assert (message_id, result.applied, result.already_applied) == (3, True, False)
