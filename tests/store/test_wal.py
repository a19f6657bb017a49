"""engine.store.wal: the SQLite WAL kept small under load; a full disk answered AR, then AA once freed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from engine.errors import StoreError
from engine.store.wal import (
    FRAME_BYTES,
    MAX_CHECKPOINT_COMMITS,
    MIN_CHECKPOINT_COMMITS,
    WARNING_INTERVAL_SECONDS,
    WalGuard,
)
from tests.fakes.harness import BASIC_CONFIG, in_thread, make_config, port_of, start_engine
from tests.fakes.load import Senders, stored_control_ids

MIB = 1024 * 1024


def _config(tmp_path: Path, database: Path, wal_max_bytes: int):
    """The harness's engine (one listener, one channel taking everything) with wal_max_bytes set."""
    store = "    lock_timeout_seconds: {lock_timeout}\n"
    text = BASIC_CONFIG.replace(store, f"{store}    wal_max_bytes: {wal_max_bytes}\n")
    assert text != BASIC_CONFIG
    return make_config(tmp_path, store_url=f"sqlite:///{database}", text=text)


def _largest_wal(wal: Path, seconds: float) -> int:
    """The largest size the WAL file had, looked at every 2 ms for ``seconds``."""
    largest, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        time.sleep(0.002)
    return largest


class _Warnings:
    """The store's warnings logged while inside the ``with``."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, event) -> None:
        if event.get("log_namespace") == "engine.store" and event.get("log_level") == LogLevel.warn:
            self.texts.append(formatEvent(event))

    def __enter__(self) -> _Warnings:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        globalLogPublisher.removeObserver(self)


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs mounted for the test (root only: skipped where mount is not permitted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_the_guard_sees_the_wal_past_half_its_limit_and_waits_after_a_failure(tmp_path):
    """Truncation is due past half of wal_max_bytes, not without a WAL, not right after a failure."""
    now = [100.0]
    database = tmp_path / "store.db"
    guard = WalGuard(database, 2 * MIB, clock=lambda: now[0])
    assert not guard.truncation_due()  # no WAL file yet
    wal = tmp_path / "store.db-wal"
    wal.write_bytes(bytes(MIB))
    assert not guard.truncation_due()
    wal.write_bytes(bytes(MIB + 1))
    assert guard.truncation_due() and not guard.full()
    guard.failed("database or disk is full", truncating=True)
    assert not guard.truncation_due()
    now[0] += 1.0
    assert guard.truncation_due()
    wal.write_bytes(bytes(3 * MIB // 2 + 1))
    assert guard.full()
    assert not WalGuard(None, 2 * MIB).truncation_due()
    assert not WalGuard(None, 2 * MIB).full()


def test_the_guard_paces_checkpoints_to_an_eighth_of_the_limit_learnt_after_complete_ones(tmp_path):
    """Checkpoints come after as many commits as write wal_max_bytes / 8, learnt only from a WAL that
    started over (after a complete checkpoint), within MIN and MAX_CHECKPOINT_COMMITS."""
    guard = WalGuard(tmp_path / "store.db", 64 * MIB)
    eighth = 64 * MIB // 8 // FRAME_BYTES  # frames
    assert guard.checkpoint_commits == MIN_CHECKPOINT_COMMITS
    guard.paced(1200, 100, complete=True)  # the WAL may hold frames from before: nothing learnt
    assert guard.checkpoint_commits == MIN_CHECKPOINT_COMMITS
    guard.paced(1200, 100, complete=True)  # 12 frames a commit
    assert guard.checkpoint_commits == eighth * 100 // 1200
    guard.paced(3600, 100, complete=False)  # 36 frames a commit (groups of eight)
    assert guard.checkpoint_commits == eighth * 100 // 3600
    guard.paced(100, 100, complete=True)  # after an incomplete one: nothing learnt
    assert guard.checkpoint_commits == eighth * 100 // 3600
    guard.paced(100, 100, complete=True)
    assert guard.checkpoint_commits == MAX_CHECKPOINT_COMMITS
    guard.paced(eighth * 10, 1, complete=True)
    assert guard.checkpoint_commits == MIN_CHECKPOINT_COMMITS
    guard.paced(0, 0, complete=True)  # an idle checkpoint: nothing learnt
    assert guard.checkpoint_commits == MIN_CHECKPOINT_COMMITS


def test_failed_checkpoints_are_one_warning_a_minute_with_their_count(tmp_path):
    """The first failure warns; the next ones within WARNING_INTERVAL_SECONDS are counted, then warned."""
    now = [0.0]
    guard = WalGuard(tmp_path / "store.db", 2 * MIB, clock=lambda: now[0])
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(5):
            guard.failed("database or disk is full", truncating=False)
            now[0] += 1.0
        now[0] += WARNING_INTERVAL_SECONDS
        guard.failed("database or disk is full", truncating=False)
        guard.succeeded()
        guard.succeeded()
    finally:
        globalLogPublisher.removeObserver(events.append)
    store_events = [e for e in events if e.get("log_namespace") == "engine.store"]
    warnings = [e for e in store_events if e["log_level"] == LogLevel.warn]
    assert [w["failures"] for w in warnings] == [1, 5]
    assert [e["log_level"] for e in store_events].count(LogLevel.info) == 1


@pytest_twisted.inlineCallbacks
def test_the_wal_stays_under_its_limit_under_load(tmp_path):
    """Four senders at full speed for 2 s: the WAL file never grows past wal_max_bytes (1 MiB)."""
    database = tmp_path / "store" / "hl7engine.db"
    wal = Path(f"{database}-wal")
    engine = start_engine(_config(tmp_path, database, MIB))
    senders = Senders(port_of(engine), connections=4).start()
    try:
        largest = yield in_thread(_largest_wal, wal, 2.0)
    finally:
        yield in_thread(senders.stop)
        yield engine.stopService()
    stored = senders.counts()["AA"]
    assert stored > 500, senders.counts()
    assert largest <= MIB, f"the WAL reached {largest:,} bytes ({stored} messages)"


@pytest_twisted.inlineCallbacks
def test_a_full_disk_answers_ar_then_aa_by_itself_once_space_is_freed(tmp_path, small_disk):
    """On an 8 MiB disk four senders go on until AR, the WAL within its limit meanwhile; once a filler
    file is deleted the same engine answers AA again; every AA'd message is stored; a warning said why."""
    database = small_disk / "store" / "hl7engine.db"
    filler = small_disk / "filler"
    filler.write_bytes(bytes(3 * MIB))
    engine = start_engine(_config(tmp_path, database, MIB))
    senders = Senders(port_of(engine), connections=4).start()
    with _Warnings() as warnings:
        try:
            full = yield in_thread(senders.wait_for, "AR", after=0.0, seconds=20.0)
            largest = yield in_thread(_largest_wal, Path(f"{database}-wal"), 0.5)  # still full, still sending
            refused = senders.counts()["AR"]
            filler.unlink()
            freed_at = time.monotonic()
            recovered = yield in_thread(senders.wait_for, "AA", after=freed_at, seconds=10.0)
        finally:
            yield in_thread(senders.stop)
            yield engine.stopService()
    assert full, f"the disk never filled: {senders.counts()}"
    assert refused > 20, "the senders were answered AR only now and then while the disk was full"
    assert largest <= MIB, f"the WAL reached {largest:,} bytes while the disk was full"
    assert recovered, f"no AA once space was freed: {senders.counts()}; warnings: {warnings.texts[-3:]}"
    assert any("checkpointing the store's WAL failed" in text for text in warnings.texts)
    acknowledged = senders.acknowledged("AA")
    assert stored_control_ids(f"sqlite:///{database}", acknowledged) == acknowledged
    assert senders.mismatches == 0


def test_a_full_wal_refuses_writes_only_while_checkpoints_fail(tmp_path):
    """refusal(): a transient StoreError while the WAL is past 2/3 of its limit and the last checkpoint
    raised an error; None once one succeeded, while the WAL has room, or when readers held it back."""
    guard = WalGuard(tmp_path / "store.db", 4 * MIB)
    wal = tmp_path / "store.db-wal"
    wal.write_bytes(bytes(3 * MIB + 1))
    assert guard.refusal() is None
    guard.failed("database or disk is full", truncating=True)
    refusal = guard.refusal()
    assert isinstance(refusal, StoreError) and refusal.transient
    guard.succeeded()
    assert guard.refusal() is None
    guard.failed("database or disk is full", truncating=True)
    wal.write_bytes(bytes(2 * MIB))
    assert guard.refusal() is None
    wal.write_bytes(bytes(4 * MIB))
    guard.failed("readers or another process held it", truncating=True, blocked=True)
    assert guard.refusal() is None
