"""Retention: old content goes, rows, deliveries, events, audit and record stay, and the space comes back."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.model import AttemptResult, Outcome, Status
from engine.record.ingest import RecordIngestor
from engine.record.query import get_patient
from engine.store.audit import AuditRepository
from engine.store.db import create_engine_for
from engine.store.driver import AUTO_VACUUM_INCREMENTAL
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.retention import PruneTarget, RetentionPolicy, RetentionRepository
from engine.store.schema import deliveries, messages, metadata
from tests.fakes.messages import new_message
from tests.fakes.record import SAMPLES
from tests.fakes.store import NOW, count_commits, queued

DAY = timedelta(days=1)
#: When the "old" messages of these tests came: ten days before NOW.
OLD = NOW - 10 * DAY


@pytest.fixture
def retention(engine):
    """A RetentionRepository whose clock stands still at NOW."""
    return RetentionRepository(engine, clock=lambda: NOW)


def _sent(queues, message_ids, destination="emr"):
    """Process each message to one delivery and record it SENT with an answer: the message is SENT."""
    ids = queues.record_processing([queued(i, destination, transformed=b"T%d" % i) for i in message_ids])
    queues.record_attempts(
        [AttemptResult(d, Outcome.SENT, NOW, response=b"MSA|AA|%d" % d, response_code="AA") for d in ids]
    )


def _table(engine, table: sa.Table) -> list[tuple]:
    """Every row of ``table``, in an order that does not depend on how the database reads them."""
    with engine.connect() as connection:
        return sorted((tuple(row) for row in connection.execute(sa.select(table))), key=repr)


def test_prune_removes_content_and_keeps_rows_events_and_deliveries(
    engine, repository, queues, retention, make_message
):
    """A pruned message keeps its columns, status, events and delivery rows; its content is gone."""
    ids = repository.insert([make_message(n, channel="adt", received_at=OLD) for n in range(3)])
    _sent(queues, ids)
    before = [repository.get(i) for i in ids]

    summary = retention.prune(RetentionPolicy({"adt": 1}), limit=2)

    assert summary.total.messages == 3
    assert summary.total.content_bytes == sum(
        len(m.raw) + len(m.transformed) + sum(len(d.payload) + len(d.response) for d in m.deliveries)
        for m in before
    )
    for old in before:
        new = repository.get(old.id)
        assert new.summary == old.summary
        assert new.events == old.events and new.ack == old.ack
        assert (new.raw, new.transformed, new.pruned_at) == (b"", None, NOW)
        assert [(d.id, d.status, d.sent_at, d.response_code) for d in new.deliveries] == [
            (d.id, d.status, d.sent_at, d.response_code) for d in old.deliveries
        ]
        assert all(d.payload is None and d.response is None for d in new.deliveries)


def test_only_finished_messages_older_than_their_retention_are_pruned(
    engine, repository, queues, retention, make_message
):
    """Per channel days, the default for other channels and for no channel; RECEIVED and QUEUED stay."""
    old, recent = OLD, NOW - DAY / 2
    new = [
        make_message(1, channel="adt", status=Status.SENT, received_at=old),  # 3 days: pruned
        make_message(2, channel="adt", status=Status.SENT, received_at=recent),  # too recent
        make_message(3, channel="adt", status=Status.RECEIVED, received_at=old),  # not processed yet
        make_message(4, channel="lab", status=Status.ERROR, received_at=old),  # 30 days: kept
        make_message(5, channel="misc", status=Status.FILTERED, received_at=old),  # default 7: pruned
        make_message(6, channel=None, status=Status.REJECTED, received_at=old),  # default 7: pruned
        make_message(7, channel="adt", status=Status.RECEIVED, received_at=old),  # QUEUED below
    ]
    ids = repository.insert(new)
    queues.record_processing([queued(ids[6], "emr")])

    summary = retention.prune(RetentionPolicy({"adt": 3, "lab": 30}, default_days=7), limit=10)

    pruned = {i for i in ids if repository.get(i).pruned_at is not None}
    assert pruned == {ids[0], ids[4], ids[5]}
    assert {(t.label, p.messages) for t, p in summary.targets} == {
        ("adt", 1),
        ("lab", 0),
        ("misc", 1),
        ("(no channel)", 1),
    }


def test_dry_run_changes_nothing(engine, repository, queues, retention, make_message):
    """A dry run measures exactly what a prune then removes, and leaves every table as it was."""
    ids = repository.insert([make_message(n, channel="adt", received_at=OLD) for n in range(5)])
    _sent(queues, ids[:3])
    tables = (messages, deliveries)
    before = [_table(engine, t) for t in tables]

    dry = retention.prune(RetentionPolicy(default_days=1), limit=2, dry_run=True)

    assert [_table(engine, t) for t in tables] == before
    assert dry.dry_run and dry.total.messages == 3  # the other two are still RECEIVED
    assert retention.prune(RetentionPolicy(default_days=1), limit=2).total == dry.total


def test_each_batch_is_a_transaction_of_its_own(engine, repository, retention, make_message):
    """Pruning 10 messages 4 at a time takes 3 transactions and a last that finds none: never one for all."""
    repository.insert(
        [make_message(n, channel="adt", status=Status.SENT, received_at=OLD) for n in range(10)]
    )
    target = PruneTarget("adt", NOW)
    commits = count_commits(engine)
    sizes = []
    while (batch := retention.prune_batch(target, limit=4)).messages:
        sizes.append(batch.messages)
    assert sizes == [4, 4, 2]
    assert len(commits) == 4  # one per call: the last found nothing left


def test_reprocess_and_resend_leave_a_pruned_message_alone(
    engine, repository, queues, retention, make_message
):
    """Reprocess skips a pruned message (its content is gone); resend finds no payload to send."""
    [message_id] = repository.insert([make_message(1, channel="adt", received_at=OLD)])
    _sent(queues, [message_id])
    retention.prune(RetentionPolicy({"adt": 1}), limit=10)
    assert queues.reprocess([message_id]) == 0
    assert queues.resend([message_id]) == []
    assert repository.get(message_id).status == Status.SENT


def test_prune_keeps_the_audit_trail_and_the_patient_record(engine, repository, retention):
    """The audit trail and the unified record built from the messages are the same after a prune."""
    audit = AuditRepository(engine, clock=lambda: NOW)
    ingestor = RecordIngestor(engine)
    patients = set()
    for name in sorted(p.name for p in SAMPLES.glob("*.hl7"))[:4]:
        raw = (SAMPLES / name).read_bytes()
        [message_id] = repository.insert([_stored(raw)])
        result = ingestor.apply(message_id, Message.parse(decode(raw).text), NOW - 30 * DAY)
        patients.add(result.patient_id)
        audit.record(user="ops", action="view", remote="10.0.0.1", message_id=message_id)
    patients.discard(None)
    record = {p: get_patient(engine, p) for p in patients}
    # Every other table, the record's included (its rows name the messages they came from).
    others = [t for t in metadata.sorted_tables if t.name not in ("messages", "deliveries")]
    before = {t.name: _table(engine, t) for t in others}

    assert retention.prune(RetentionPolicy({"record": 7}), limit=3).total.messages == 4

    assert record and {p: get_patient(engine, p) for p in patients} == record
    assert {t.name: _table(engine, t) for t in others} == before
    assert before["audit_log"] and before["record_patients"]


def _stored(raw: bytes):
    return new_message(raw, channel="record", status=Status.SENT, received_at=NOW - 30 * DAY)


def _insert_large(repository: MessageRepository, make_message, count: int, size: int) -> None:
    """``count`` SENT messages of ``size`` bytes each (a segment of filler), in groups of 200."""
    filler = b"NTE|1||" + b"x" * size + b"\r"
    for start in range(0, count, 200):
        repository.insert(
            [
                make_message(
                    n, channel="adt", status=Status.SENT, received_at=OLD, raw=make_message(n).raw + filler
                )
                for n in range(start, min(count, start + 200))
            ]
        )


def _file_bytes(url: str) -> int:
    return Path(make_url(url).database).stat().st_size


@pytest.mark.parametrize("size", [16_000, 1_500])
def test_prune_gives_the_space_back_to_the_file_system(sqlite_url, make_message, size):
    """3,000 messages pruned, over a page or inside their row's page: the file falls to a third or less.

    No free page is left in it, and it is sound: integrity and foreign keys check.
    """
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    retention = RetentionRepository(engine, clock=lambda: NOW)
    _insert_large(MessageRepository(engine), make_message, 3000, size)
    before = retention.space()
    assert before.auto_vacuum == AUTO_VACUUM_INCREMENTAL  # a new store is created with it
    size_before = _file_bytes(sqlite_url)

    summary = retention.prune(RetentionPolicy({"adt": 1}), limit=500)

    after = retention.space()
    engine.dispose()  # the last connection checkpoints the WAL into the file
    assert summary.total.messages == 3000
    assert summary.space_before == before and summary.space_after == after
    assert after.page_count < before.page_count / 3
    assert after.freelist_count == 0
    assert _file_bytes(sqlite_url) < size_before / 3
    with sqlite3.connect(make_url(sqlite_url).database) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check.execute("PRAGMA foreign_key_check").fetchall() == []


def test_vacuum_switches_an_older_file_to_incremental(tmp_path, make_message):
    """A file made without auto_vacuum keeps its free pages until `prune --vacuum` rewrites it once."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # as revision 0012 and before created the file
        old.execute("PRAGMA journal_mode=WAL")
        old.execute("CREATE TABLE placeholder (x)")
    url = f"sqlite:///{path}"
    engine = create_engine_for(url)
    upgrade(engine)
    retention = RetentionRepository(engine, clock=lambda: NOW)
    _insert_large(MessageRepository(engine), make_message, 500, 16_000)
    retention.prune(RetentionPolicy({"adt": 1}), limit=500)
    kept = retention.space()
    assert kept.auto_vacuum != AUTO_VACUUM_INCREMENTAL and kept.free_bytes > 5_000_000
    assert retention.give_back_space(1000) == 0

    retention.vacuum()
    after = retention.space()
    assert after.auto_vacuum == AUTO_VACUUM_INCREMENTAL and after.freelist_count == 0
    assert after.page_count < kept.page_count / 5
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_vacuum_runs_outside_a_transaction(postgres_url, make_message):
    """On PostgreSQL `--vacuum` is a plain VACUUM (no exclusive lock); nothing to give back by pages."""
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    retention = RetentionRepository(engine, clock=lambda: NOW)
    MessageRepository(engine).insert([make_message(1, channel="adt", status=Status.SENT, received_at=OLD)])
    assert retention.prune(RetentionPolicy({"adt": 1}), limit=10).total.messages == 1
    assert retention.space() is None and retention.give_back_steps(100) == 0
    retention.vacuum()
    engine.dispose()


def test_policy_refuses_days_below_one():
    """Zero days would prune what was just received: refused."""
    with pytest.raises(ValueError, match="at least 1"):
        RetentionPolicy({"adt": 0})
