"""The file source: poll a folder, store each file with its record, move it to done or error, stop cleanly."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer

from engine.config import FileListenerConfig, parse_config
from engine.errors import StoreError
from engine.listeners.file import FileSource
from engine.model import SourceFile
from engine.store.schema import source_files
from tests.fakes.harness import start_engine, wait_until
from tests.fakes.reactor import InlineThreads

ADT = b"MSH|^~\\&|PMS|NORTH|HUB|TEST|20260101||ADT^A01|1|P|2.5\rPID|1||123\r"
ORU = b"MSH|^~\\&|LAB|NORTH|HUB|TEST|20260101||ORU^R01|2|P|2.5\rOBX|1|NM|x||5\r"
POLL_SECONDS = 5.0


class FakeIntake:
    """Records each file handed to it; answers from ``answers``: True (clean), False, an error, a Deferred."""

    def __init__(self):
        self.files: list[tuple[bytes, SourceFile, str]] = []
        self.answers: list = []

    def ingest_file(self, payload: bytes, source_file: SourceFile, *, peer: str) -> defer.Deferred:
        self.files.append((payload, source_file, peer))
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, defer.Deferred):
            return answer
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class FakeStore:
    """Knows the files stored and not moved yet by (path, size, modified_ns); records where each went."""

    def __init__(self):
        self.unmoved: set[tuple[str, int, int]] = set()
        self.moved: list[tuple[str, str]] = []  # (file name, folder name)
        self.fail_moves: list[Exception] = []

    def unmoved_file(self, path: str, size: int, modified_ns: int) -> defer.Deferred:
        return defer.succeed((path, size, modified_ns) in self.unmoved)

    def file_moved(self, path: str, size: int, modified_ns: int, moved_to: str) -> defer.Deferred:
        if self.fail_moves:
            return defer.fail(self.fail_moves.pop(0))
        self.unmoved.discard((path, size, modified_ns))
        self.moved.append((Path(path).name, Path(moved_to).parent.name))
        return defer.succeed(None)


def sha256(data: bytes) -> str:
    """The hex digest a file's record carries."""
    return hashlib.sha256(data).hexdigest()


def drop(folder: Path, name: str, data: bytes, *, age: float = 60.0) -> Path:
    """A file written ``age`` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    written = time.time() - age
    os.utime(path, (written, written))
    return path


@pytest.fixture
def inbox(tmp_path) -> Path:
    """The polled folder (created by the tests that drop files, or by the source when it starts)."""
    return tmp_path / "in"


def source(inbox: Path, **settings) -> tuple[FileSource, FakeIntake, FakeStore, InlineThreads]:
    """A file source on ``inbox`` (files taken at once unless min_age_seconds is given), not started.

    Its observer's events go to the list ``file_source.events``.
    """
    config = FileListenerConfig(
        name="inbox",
        type="file",
        directory=inbox,
        poll_seconds=POLL_SECONDS,
        **{"min_age_seconds": 0.0} | settings,
    )
    intake, store, clock = FakeIntake(), FakeStore(), InlineThreads()
    events: list[tuple[str, dict]] = []
    file_source = FileSource(
        "inbox",
        config,
        intake,
        store,
        reactor=clock,
        observer=lambda event, fields: events.append((event, fields)),
    )
    file_source.events = events
    return file_source, intake, store, clock


def outcomes(file_source: FileSource) -> list[str]:
    """The outcome of every file_taken event so far."""
    return [fields["outcome"] for event, fields in file_source.events if event == "file_taken"]


def identity(path: Path) -> tuple[str, int, int]:
    """What identifies a file in the store: path, size, modification time in ns."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def names(folder: Path) -> list[str]:
    """What a folder holds, sorted; nothing when it does not exist."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_start_makes_the_folders_and_polls_at_once(inbox):
    """The folder, done and error are created; a file already waiting is taken without waiting a period."""
    file_source, intake, _, _ = source(inbox)
    drop(inbox, "a.hl7", ADT)
    file_source.startService()
    assert (inbox / "done").is_dir() and (inbox / "error").is_dir()
    assert [payload for payload, _, _ in intake.files] == [ADT]


def test_each_file_is_stored_with_its_record_and_moved_to_done(inbox):
    """The intake gets the bytes and the file's record (path, SHA-256, size); then the file goes to done."""
    file_source, intake, store, _ = source(inbox)
    path = drop(inbox, "a.hl7", ADT)
    modified_ns = path.stat().st_mtime_ns
    file_source.startService()
    assert intake.files == [(ADT, SourceFile(str(path), sha256(ADT), len(ADT), modified_ns), f"file:{path}")]
    assert names(inbox) == ["done", "error"]
    assert names(inbox / "done") == ["a.hl7"]
    assert (inbox / "done" / "a.hl7").read_bytes() == ADT
    assert (store.moved, outcomes(file_source)) == ([("a.hl7", "done")], ["done"])


def test_a_file_not_stored_cleanly_goes_to_error(inbox):
    """When the intake says not every message was accepted, the file is moved to the error folder."""
    file_source, intake, store, _ = source(inbox)
    intake.answers = [False]
    drop(inbox, "bad.hl7", ADT)
    file_source.startService()
    assert (names(inbox / "done"), names(inbox / "error")) == ([], ["bad.hl7"])
    assert (store.moved, outcomes(file_source)) == ([("bad.hl7", "error")], ["error"])


def test_a_file_stored_before_a_crash_is_only_moved(inbox):
    """A file the store holds as committed and not moved (same path, size, modification time) is moved
    to done without being read or stored again; the others are read."""
    file_source, intake, store, _ = source(inbox)
    left = drop(inbox, "left.hl7", ADT)
    store.unmoved.add(identity(left))
    drop(inbox, "new.hl7", ORU, age=30)
    file_source.startService()
    assert [payload for payload, _, _ in intake.files] == [ORU]
    assert names(inbox / "done") == ["left.hl7", "new.hl7"]
    assert outcomes(file_source) == ["recovered", "done"]
    assert store.unmoved == set()


def test_a_file_dropped_again_is_read_again(inbox):
    """The same name and content dropped again after its move is a resend: read, stored and moved beside."""
    file_source, intake, store, clock = source(inbox)
    drop(inbox, "batch.hl7", ADT)
    file_source.startService()
    drop(inbox, "batch.hl7", ADT, age=30)
    clock.advance(POLL_SECONDS)
    assert [payload for payload, _, _ in intake.files] == [ADT, ADT]
    assert names(inbox / "done") == ["batch.hl7", "batch.hl7.1"]
    assert outcomes(file_source) == ["done", "done"]


def test_a_changed_file_with_the_name_of_one_left_by_a_crash_is_read(inbox):
    """Only path, size and modification time together name the file left unmoved: another size is read."""
    file_source, intake, store, _ = source(inbox)
    path = drop(inbox, "a.hl7", ADT + ORU)
    path_name, _, modified_ns = identity(path)
    store.unmoved.add((path_name, len(ADT), modified_ns))
    file_source.startService()
    assert [payload for payload, _, _ in intake.files] == [ADT + ORU]
    assert outcomes(file_source) == ["done"]


def test_a_move_the_store_cannot_record_is_logged_and_the_file_stays_moved(inbox):
    """When recording the move fails, the file is in done all the same and the next file is taken."""
    file_source, intake, store, _ = source(inbox)
    store.fail_moves = [StoreError("the database is down", transient=True)]
    drop(inbox, "first.hl7", ADT, age=40)
    drop(inbox, "second.hl7", ORU, age=20)
    file_source.startService()
    assert names(inbox / "done") == ["first.hl7", "second.hl7"]
    assert (store.moved, outcomes(file_source)) == ([("second.hl7", "done")], ["done", "done"])


def test_matching_files_old_enough_are_taken_oldest_first(inbox):
    """Only the pattern's files, oldest first; one written less than min_age ago waits for a later poll."""
    file_source, intake, _, clock = source(inbox, min_age_seconds=10.0)
    drop(inbox, "later.hl7", ORU, age=20)
    drop(inbox, "first.hl7", ADT, age=40)
    drop(inbox, "notes.txt", b"not a message", age=40)
    fresh = drop(inbox, "fresh.hl7", ADT + ORU, age=0)
    file_source.startService()
    assert [Path(record.path).name for _, record, _ in intake.files] == ["first.hl7", "later.hl7"]
    assert names(inbox) == ["done", "error", "fresh.hl7", "notes.txt"]
    written = time.time() - 60
    os.utime(fresh, (written, written))
    clock.advance(POLL_SECONDS)
    assert [Path(record.path).name for _, record, _ in intake.files][2:] == ["fresh.hl7"]


def test_a_moved_file_never_replaces_one_already_there(inbox):
    """A name already in done gets .1, then .2: no file is overwritten."""
    file_source, _, _, clock = source(inbox)
    drop(inbox / "done", "a.hl7", b"older")
    drop(inbox, "a.hl7", ADT)
    file_source.startService()
    drop(inbox, "a.hl7", ORU)
    clock.advance(POLL_SECONDS)
    assert names(inbox / "done") == ["a.hl7", "a.hl7.1", "a.hl7.2"]
    assert [(inbox / "done" / n).read_bytes() for n in ("a.hl7", "a.hl7.1", "a.hl7.2")] == [
        b"older",
        ADT,
        ORU,
    ]


def test_a_failed_poll_leaves_the_file_for_the_next_poll(inbox):
    """When the store fails, the file stays where it is; the next poll stores and moves it."""
    file_source, intake, _, clock = source(inbox)
    intake.answers = [StoreError("the database is down", transient=True)]
    drop(inbox, "a.hl7", ADT)
    file_source.startService()
    assert names(inbox) == ["a.hl7", "done", "error"]
    clock.advance(POLL_SECONDS)
    assert len(intake.files) == 2
    assert names(inbox / "done") == ["a.hl7"]
    assert outcomes(file_source) == ["failed", "done"]


def test_a_poll_asked_for_while_one_runs_is_the_same_poll(inbox):
    """Polls never overlap: asking again while a file is being stored gives the poll under way."""
    file_source, intake, _, _ = source(inbox)
    held = defer.Deferred()
    intake.answers = [held]
    drop(inbox, "a.hl7", ADT)
    file_source.startService()
    assert file_source.poll() is file_source.poll()
    assert len(intake.files) == 1
    held.callback(True)
    assert names(inbox / "done") == ["a.hl7"]


def test_stop_lets_the_file_in_flight_finish_and_takes_no_more(inbox):
    """Stopping waits for the file being stored (then moved); later files stay, and no poll follows."""
    file_source, intake, _, clock = source(inbox)
    held = defer.Deferred()
    intake.answers = [held]
    drop(inbox, "first.hl7", ADT, age=40)
    drop(inbox, "second.hl7", ORU, age=20)
    file_source.startService()
    stopped = file_source.stopService()
    assert not stopped.called
    held.callback(True)
    assert stopped.called
    assert names(inbox / "done") == ["first.hl7"]
    clock.advance(POLL_SECONDS * 3)
    assert len(intake.files) == 1
    assert "second.hl7" in names(inbox)


# --- the real engine and store ---------------------------------------------------------------------

ENGINE = """
engine:
  data_dir: data
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
listeners:
  - name: inbox
    type: file
    directory: in
    poll_seconds: 0.05
    min_age_seconds: 0
channels:
  - name: everything
    source: inbox
    accept:
      types: ["*"]
"""


def engine_on(tmp_path: Path):
    """A started engine whose file listener ``inbox`` polls tmp_path/in every 50 ms, storing everything."""
    return start_engine(parse_config(ENGINE, base_dir=tmp_path))


def taken(engine, outcome: str) -> float:
    """How many files the engine's /metrics counts with this outcome."""
    labels = {"listener": "inbox", "outcome": outcome}
    return engine.metrics.registry.get_sample_value("hl7engine_file_source_files_total", labels) or 0


def stored(engine) -> defer.Deferred:
    """Fires with the number of messages the engine stored."""
    return engine.store.count()


@pytest_twisted.inlineCallbacks
def test_a_resent_identical_file_is_stored_again(tmp_path):
    """A lab dropping the same file again gets it stored again: two messages.

    Same name, bytes and even modification time (a copy that keeps it): the first was moved, so this
    one is a resend, not a file left by a crash.
    """
    inbox = tmp_path / "in"
    engine = engine_on(tmp_path)
    try:
        modified_ns = drop(inbox, "batch.hl7", ADT).stat().st_mtime_ns
        yield wait_until(lambda: names(inbox / "done") == ["batch.hl7"])
        os.utime(drop(inbox, "batch.hl7", ADT), ns=(modified_ns, modified_ns))
        yield wait_until(lambda: names(inbox / "done") == ["batch.hl7", "batch.hl7.1"])
        assert (yield stored(engine)) == 2
        yield wait_until(lambda: taken(engine, "done") == 2)  # counted once its move is recorded
    finally:
        yield engine.stopService()


@defer.inlineCallbacks
def _commit_without_moving(tmp_path: Path, data: bytes):
    """Run an engine until it has stored ``data`` dropped as in/a.hl7 but could not move the file.

    The done folder is a plain file meanwhile: the move fails after the commit, as a crash would leave it.
    """
    inbox = tmp_path / "in"
    engine = engine_on(tmp_path)
    try:
        (inbox / "done").rmdir()
        (inbox / "done").write_bytes(b"")
        drop(inbox, "a.hl7", data)
        yield wait_until(lambda: taken(engine, "failed") >= 1)
        assert (yield stored(engine)) == 1
        assert "a.hl7" in names(inbox)
    finally:
        yield engine.stopService()
    (inbox / "done").unlink()


@pytest_twisted.inlineCallbacks
def test_a_file_committed_but_not_moved_is_finished_without_a_second_copy(tmp_path):
    """After a restart, the file whose messages were committed before its move is only moved to done."""
    inbox = tmp_path / "in"
    yield _commit_without_moving(tmp_path, ADT)
    engine = engine_on(tmp_path)
    try:
        yield wait_until(lambda: names(inbox / "done") == ["a.hl7"])
        assert (yield stored(engine)) == 1
        yield wait_until(lambda: (taken(engine, "recovered"), taken(engine, "done")) == (1, 0))
        with engine.store.repository.engine.connect() as connection:
            moved = connection.execute(sa.select(source_files.c.moved_to)).scalars().all()
        assert moved == [str(inbox / "done" / "a.hl7")]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_changed_file_with_the_name_of_one_not_moved_is_read(tmp_path):
    """A file replaced under the same name after such a crash is another file: it is read and stored."""
    inbox = tmp_path / "in"
    yield _commit_without_moving(tmp_path, ADT)
    drop(inbox, "a.hl7", ADT + ORU)
    engine = engine_on(tmp_path)
    try:
        yield wait_until(lambda: names(inbox / "done") == ["a.hl7"])
        assert (yield stored(engine)) == 3
        yield wait_until(lambda: (taken(engine, "recovered"), taken(engine, "done")) == (0, 1))
    finally:
        yield engine.stopService()
