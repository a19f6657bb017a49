"""The journal of a queue that can move: kept in the store for another node, or in a file on one machine.

The contract both journals keep is in test_journal.py (run on each). Here: what only the store's
journal does (its commit, a lost connection, its lease), a queue taken over by a dispatcher on
another MessageStore after the first one stopped mid-round, and the file journal read back by
another process of the same machine after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, task

from engine.channels.destinations.base import Destination
from engine.channels.dispatcher import IN_DOUBT_REASON, Dispatcher, RetryPolicy
from engine.channels.journal import DeliveryJournal, Journals, StoreJournal, journal_engine
from engine.model import Delivery, DeliveryResult, LeaseToken, NewDelivery, Outcome, Status, utc_now
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.schema import deliveries, leases, message_events, queue_journals
from tests.fakes.messages import new_message

PROJECT = Path(__file__).resolve().parents[2]
QUEUED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WAIT_SECONDS = 20  # a wait for a dispatcher gives up after this


def _delivery(n: int) -> Delivery:
    return Delivery(n, 100 + n, "adt", "lab", f"C{n}", b"MSH|", 1, QUEUED_AT)


@pytest.fixture
def migrated(postgres_url) -> str:
    """A PostgreSQL database migrated to head: its URL."""
    engine = create_engine_for(postgres_url)
    upgrade(engine)
    engine.dispose()
    return postgres_url


def _row(url: str, key: str) -> str | None:
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(sa.select(queue_journals.c.lines).where(queue_journals.c.key == key))
    finally:
        engine.dispose()


def test_journals_keep_a_queue_in_the_store_only_when_given_one(tmp_path, migrated):
    """With a store URL a queue's journal is its row (key queue:<channel>/<destination>), else a file."""
    in_store = Journals(tmp_path, sync=False, reactor=None, store_url=migrated).journal("adt", "lab")
    in_file = Journals(tmp_path, sync=False, reactor=None).journal("adt", "lab")
    assert isinstance(in_store, StoreJournal) and in_store.key == "queue:adt/lab"
    assert isinstance(in_file, DeliveryJournal)


@pytest.mark.parametrize(("sync", "expected"), [(False, "off"), (True, "on")])
def test_on_postgresql_the_journal_commits_asynchronously_unless_power_loss(migrated, sync, expected):
    """durability process: synchronous_commit off on the journal's connection; power_loss keeps it on."""
    engine = journal_engine(migrated, sync, 5.0)
    try:
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SHOW synchronous_commit")) == expected
    finally:
        engine.dispose()


def _journal_backend(url: str) -> int:
    """The PostgreSQL backend of the one journal connected to the database at ``url``."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            )
    finally:
        engine.dispose()


def test_a_lost_connection_refuses_that_send_and_the_next_write_keeps_every_line(tmp_path, migrated):
    """The server ends the journal's connection: that note refuses the send (RETRY); the next one reconnects.

    The row then holds every line written before the loss and after it, each once.
    """
    journal = Journals(tmp_path, sync=False, reactor=None, store_url=migrated).journal("adt", "lab")
    journal.open()
    try:
        assert journal.note_sending(_delivery(1)) is None
        journal.answered(_delivery(1), DeliveryResult(Outcome.SENT))
        admin = create_engine_for(migrated)
        with admin.connect() as connection:
            connection.execute(sa.select(sa.func.pg_terminate_backend(_journal_backend(migrated))))
        admin.dispose()
        refused = journal.note_sending(_delivery(2))
        assert refused.outcome == Outcome.RETRY and "cannot be written" in refused.reason
        assert journal.note_sending(_delivery(2)) is None
    finally:
        journal.close()
    lines = _row(migrated, "queue:adt/lab").splitlines()
    assert [line[:6] for line in lines] == ['["S",1', '["A",1', '["S",2']


class _Held:
    """The leases of a node that holds every queue under one token."""

    shared = True

    def __init__(self, holder: int, token: int):
        self.holder, self.held = holder, token

    def token(self, key: str) -> LeaseToken:
        return LeaseToken(key, self.holder, self.held)


def test_a_node_that_lost_the_queue_cannot_note_and_so_cannot_send(tmp_path, migrated):
    """Each note is fenced by the queue's lease: once another holding took the lease, the send is refused."""
    engine = create_engine_for(migrated)
    with engine.begin() as connection:
        connection.execute(sa.insert(leases).values(key="queue:adt/lab", holder=1, token=7))
    journal = Journals(tmp_path, sync=False, reactor=None, store_url=migrated, leases=_Held(1, 7)).journal(
        "adt", "lab"
    )
    journal.open()
    try:
        assert journal.note_sending(_delivery(1)) is None
        with engine.begin() as connection:  # node 2 takes the queue over
            connection.execute(sa.update(leases).values(holder=2, token=8))
        refused = journal.note_sending(_delivery(2))
    finally:
        journal.close()
        engine.dispose()
    assert refused.outcome == Outcome.RETRY and "no longer held" in refused.reason
    assert _row(migrated, "queue:adt/lab").count('["S"') == 1


class Partner(Destination):
    """A partner that notes every control id it gets; it answers the first ``answering``, then none."""

    def __init__(self, answering: int | None = None):
        super().__init__("lab")
        self.received: list[str] = []
        self._answering = answering

    def send(self, delivery: Delivery) -> defer.Deferred:
        self.received.append(delivery.control_id)
        if self._answering is not None and len(self.received) > self._answering:
            return defer.Deferred()  # in flight for good: the node is about to die
        return defer.succeed(DeliveryResult(Outcome.SENT, response_code="AA"))


def _dispatcher(store, journals: Journals, partner: Partner) -> Dispatcher:
    return Dispatcher(
        "adt",
        partner,
        RetryPolicy(jitter=0),
        store=store,
        journal=journals.journal("adt", "lab"),
        reactor=reactor,
        clock=utc_now,
        on_settled=lambda delivery, result: None,
        observer=lambda *_: None,
    )


def _store_journals(folder: Path, url: str) -> Journals:
    """The journals of a node of a cluster on the store at ``url``."""
    return Journals(folder, sync=False, reactor=reactor, store_url=url)


@defer.inlineCallbacks
def _until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {WAIT_SECONDS} s"
        yield task.deferLater(reactor, 0.01, lambda: None)


def _states(url: str) -> list[tuple[str, str, int]]:
    """(control id, status, attempts) of every delivery, in queue order."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            d = deliveries.c
            rows = connection.execute(sa.select(d.control_id, d.status, d.attempts).order_by(d.id))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def _in_doubt(url: str) -> list[str]:
    """The details of the events that say "possible duplicate"."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            e = message_events.c
            return list(
                connection.scalars(sa.select(e.detail).where(e.detail.contains("possible duplicate")))
            )
    finally:
        engine.dispose()


def _queue_ten(url: str) -> list[tuple[int, int, str]]:
    """Queue C1..C10 for destination lab of channel adt: (delivery id, message id, control id) in order."""
    rows = [
        new_message(
            b"MSH|^~\\&|A|B|C|D|20260101120000||ADT^A01|C%d|P|2.5\r" % n,
            control_id=f"C{n}",
            status=Status.QUEUED,
            deliveries=(NewDelivery("lab", Status.QUEUED, f"C{n}", b"MSH|"),),
        )
        for n in range(1, 11)
    ]
    engine = create_engine_for(url)
    try:
        MessageRepository(engine).insert(rows)
        with engine.connect() as connection:
            d = deliveries.c
            return [tuple(row) for row in connection.execute(sa.select(d.id, d.message_id, d.control_id))]
    finally:
        engine.dispose()


@defer.inlineCallbacks
def _take_over(folder: Path, url: str, store) -> list[str]:
    """Node B drains the queue, after recovering what its journal holds; what its partner received."""
    assert [state for _, state, _ in _states(url)] == ["QUEUED"] * 10
    partner = Partner()
    node_b = _dispatcher(store, _store_journals(folder, url), partner)
    node_b.start()
    try:
        yield _until(lambda: all(state == "SENT" for _, state, _ in _states(url)), "node B sent every one")
    finally:
        yield node_b.stop()
    return partner.received


def _only_the_one_in_flight_went_twice(url: str) -> None:
    assert [attempts for _, _, attempts in _states(url)] == [1, 1, 1, 1, 2, 1, 1, 1, 1, 1]
    [doubt] = _in_doubt(url)
    assert IN_DOUBT_REASON in doubt


@pytest_twisted.inlineCallbacks
def test_a_queue_taken_over_after_its_node_stopped_mid_round_sends_only_the_one_in_flight_again(
    tmp_path, migrated, open_postgres_store
):
    """Node A sends 4 of 10 and stops with the 5th in flight; node B, on its own MessageStore, takes over.

    B records A's four answers as they were, sends the 5th again marked a possible duplicate, then
    the rest: the partners got each message once, but the one in flight.
    """
    _queue_ten(migrated)
    first = Partner(answering=4)
    node_a = _dispatcher(open_postgres_store(), _store_journals(tmp_path / "a", migrated), first)
    node_a.start()
    yield _until(lambda: len(first.received) == 5, "node A sent 5")
    node_a.journal.close()  # the round is not recorded, the journal stays in the store
    second = yield _take_over(tmp_path / "b", migrated, open_postgres_store())
    assert first.received == ["C1", "C2", "C3", "C4", "C5"]
    assert second == ["C5", "C6", "C7", "C8", "C9", "C10"]
    _only_the_one_in_flight_went_twice(migrated)


_KILLED_NODE = """
import json, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from engine.channels.journal import Journals
from engine.model import Delivery, DeliveryResult, Outcome
url, partner, queue = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
journal = Journals(partner.parent, sync=False, reactor=None, store_url=url).journal("adt", "lab")
journal.open()
with partner.open("a") as received:
    for n, (delivery_id, message_id, control_id) in enumerate(queue, 1):
        delivery = Delivery(delivery_id, message_id, "adt", "lab", control_id, b"", 1, datetime.now(UTC))
        if journal.note_sending(delivery) is not None:
            sys.exit("the journal refused a note")
        received.write(control_id + "\\n")
        received.flush()
        if n == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        journal.answered(delivery, DeliveryResult(Outcome.SENT, b"MSA|AA|" + control_id.encode(), "AA"))
"""


@pytest_twisted.inlineCallbacks
def test_a_queue_taken_over_after_its_node_was_sigkilled_sends_only_the_one_in_flight_again(
    tmp_path, migrated, open_postgres_store
):
    """A real process notes and sends as the sending thread does, and is SIGKILLed with the 5th in flight.

    Its notes, committed asynchronously, are in the store all the same: node B records the four
    answers and sends only the 5th again (marked), then the rest.
    """
    queue = _queue_ten(migrated)
    partner = tmp_path / "a" / "received"
    partner.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_NODE, migrated, str(partner), json.dumps(queue)],
        env=env,
        timeout=60,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    second = yield _take_over(tmp_path / "b", migrated, open_postgres_store())
    assert partner.read_text().split() == ["C1", "C2", "C3", "C4", "C5"]
    assert second == ["C5", "C6", "C7", "C8", "C9", "C10"]
    _only_the_one_in_flight_went_twice(migrated)


_KILLED_WRITER = """
import os, signal, sys
from datetime import UTC, datetime
from engine.channels.journal import Journals
from engine.model import Delivery, DeliveryResult, Outcome
journal = Journals(__import__("pathlib").Path(sys.argv[1]), sync=False, reactor=None).journal("adt", "lab")
journal.open()
for n in (1, 2):
    delivery = Delivery(n, 100 + n, "adt", "lab", f"C{n}", b"MSH|", 1, datetime(2026, 1, 2, tzinfo=UTC))
    journal.note_sending(delivery)
    if n == 1:
        journal.answered(delivery, DeliveryResult(Outcome.SENT, b"MSA|AA|C1\\r", "AA"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_on_one_machine_another_process_reads_what_a_killed_process_left_in_the_file_journal(tmp_path):
    """Worker processes share data_dir: the file journal a SIGKILLed process wrote is read back by the next.

    So on one machine a queue may move between processes without keeping its journal in the store.
    """
    folder = tmp_path / "journal"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(folder)], env=env, timeout=60, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    journal = Journals(folder, sync=False, reactor=None).journal("adt", "lab")
    journal.open()
    try:
        unrecorded = journal.unrecorded()
    finally:
        journal.close()
    assert [(u.delivery.delivery_id, u.delivery.message_id) for u in unrecorded] == [(1, 101), (2, 102)]
    assert unrecorded[0].result == DeliveryResult(Outcome.SENT, b"MSA|AA|C1\r", "AA", "")
    assert unrecorded[1].result is None


def test_every_queue_has_a_connection_of_its_own_however_many_queues(tmp_path, migrated):
    """More queues than a pool holds (5 + 10 overflow) each open their journal at once, none waiting."""
    journals = Journals(tmp_path, sync=False, reactor=None, store_url=migrated)
    opened = []
    try:
        for n in range(20):
            journal = journals.journal("adt", f"lab{n}")
            journal.open()
            opened.append(journal)
            assert journal.note_sending(_delivery(n)) is None
    finally:
        for journal in opened:
            journal.close()
    assert len(opened) == 20 and _row(migrated, "queue:adt/lab19").startswith('["S",19,')
