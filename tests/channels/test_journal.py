"""engine.channels.journal: what is kept before each send, what a crash leaves, and emptying it.

The contract tests run on every journal: a file, and a row of the store (SQLite, PostgreSQL).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import pytest_twisted
from twisted.internet import reactor

from engine.channels import journal as journal_module
from engine.channels.journal import Journals
from engine.model import Delivery, DeliveryResult, Outcome

QUEUED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _delivery(n: int, attempt: int = 1) -> Delivery:
    return Delivery(n, 100 + n, "adt", "lab", f"C{n}", b"MSH|", attempt, QUEUED_AT)


@pytest.fixture
def journal(kept):
    journals, _ = kept
    opened = journals.journal("adt", "lab")
    opened.open()
    yield opened
    opened.close()


def test_a_delivery_is_kept_before_it_goes_and_its_answer_before_the_next(kept, journal):
    """note_sending writes S at once; an answer goes with the next S (one write a message) or flush."""
    _, lines = kept
    first, second = _delivery(1), _delivery(2)
    assert journal.note_sending(first) is None
    assert lines(journal) == [["S", 1, 101, 1, QUEUED_AT.timestamp()]]
    journal.answered(first, DeliveryResult(Outcome.SENT, b"MSA|AA|C1\r", "AA", ""))
    assert len(lines(journal)) == 1  # held back until the next write
    journal.note_sending(second)
    assert [line[0] for line in lines(journal)] == ["S", "A", "S"]
    journal.answered(second, DeliveryResult(Outcome.RETRY, reason="timeout"))
    journal.flush()
    assert [line[:4] for line in lines(journal)][-1] == ["A", 2, 1, "RETRY"]


def test_what_a_crash_leaves_is_read_back_in_order_with_the_one_in_flight(kept, journal):
    """Reopened, the journal gives each answered attempt with its answer, and the one in flight without."""
    journals, _ = kept
    for n, outcome in ((1, Outcome.SENT), (2, Outcome.ERROR)):
        journal.note_sending(_delivery(n))
        journal.answered(_delivery(n), DeliveryResult(outcome, b"MSA|A\xe9\r", "AE", 'why "\\é\n'))
    journal.note_sending(_delivery(3, attempt=4))
    journal.close()  # as a kill leaves it: nothing flushed after the last S

    reopened = journals.journal("adt", "lab")
    reopened.open()
    unrecorded = reopened.unrecorded()
    reopened.close()
    assert [(u.delivery.delivery_id, u.delivery.message_id, u.delivery.attempt) for u in unrecorded] == [
        (1, 101, 1),
        (2, 102, 1),
        (3, 103, 4),
    ]
    assert unrecorded[0].delivery.queued_at == QUEUED_AT
    assert unrecorded[0].result == DeliveryResult(Outcome.SENT, b"MSA|A\xe9\r", "AE", 'why "\\é\n')
    assert unrecorded[1].result.outcome == Outcome.ERROR
    assert unrecorded[2].result is None


def test_recorded_empties_the_journal(kept, journal):
    """Once the round is in the store the journal holds nothing: the next note is all it keeps."""
    journals, lines = kept
    journal.note_sending(_delivery(1))
    journal.answered(_delivery(1), DeliveryResult(Outcome.SENT))
    journal.flush()
    journal.recorded()
    assert journal.unrecorded() == []
    journal.note_sending(_delivery(2))
    assert [u.delivery.delivery_id for u in journal.unrecorded()] == [2]
    assert lines(journal) == [["S", 2, 102, 1, QUEUED_AT.timestamp()]]
    journal.close()
    reopened = journals.journal("adt", "lab")
    reopened.open()
    assert [u.delivery.delivery_id for u in reopened.unrecorded()] == [2]
    reopened.close()


def test_recorded_empties_the_file_at_once(journals):
    """The file journal zeroes what it held as soon as the round is recorded."""
    journal = journals.journal("adt", "lab")
    journal.open()
    journal.note_sending(_delivery(1))
    journal.recorded()
    assert journal.path.read_bytes().strip(b"\0") == b""
    journal.close()


def test_a_torn_last_line_is_skipped_and_does_not_swallow_the_next(journals):
    """A line cut by a power loss is no entry, and the next one written still reads back."""
    journals.directory.mkdir(parents=True)
    journal = journals.journal("adt", "lab")
    journal.path.write_bytes(b'["S",1,101,1,null]\n["A",1,1,"SE')
    journal.open()
    assert [(u.delivery.delivery_id, u.result) for u in journal.unrecorded()] == [(1, None)]
    journal.note_sending(_delivery(2))
    journal.close()
    journal.open()
    assert [u.delivery.delivery_id for u in journal.unrecorded()] == [1, 2]
    journal.close()


def test_a_delivery_the_journal_cannot_note_must_not_go(journals):
    """When the journal cannot be written, note_sending answers RETRY, saying why, and notes nothing."""
    journal = journals.journal("adt", "lab")  # never opened
    refused = journal.note_sending(_delivery(1))
    assert refused.outcome == Outcome.RETRY and "cannot be written" in refused.reason
    assert journal.unrecorded() == []


def test_with_sync_every_write_is_flushed_to_disk(tmp_path, monkeypatch):
    """durability power_loss: each write (an S with the answer before it, a flush) is followed by an msync."""
    synced = []
    monkeypatch.setattr(journal_module, "_msync", synced.append)
    journal = Journals(tmp_path, sync=True, reactor=None).journal("adt", "lab")
    journal.open()
    journal.note_sending(_delivery(1))
    journal.answered(_delivery(1), DeliveryResult(Outcome.SENT))
    journal.note_sending(_delivery(2))
    journal.answered(_delivery(2), DeliveryResult(Outcome.SENT))
    journal.flush()
    journal.close()
    assert len(synced) == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [(("a@b", "c"), ("a", "b@c")), (("a/b", "c"), ("a", "b/c")), (("x" * 100, "y"), ("x" * 100, "z"))],
)
def test_each_queue_has_a_journal_of_its_own(tmp_path, first, second):
    """Names are quoted (or hashed when long) into one file name each, never shared by two queues."""
    journals = Journals(tmp_path, sync=False, reactor=None)
    one, other = journals.journal(*first).path, journals.journal(*second).path
    assert one != other and one.parent == other.parent == tmp_path
    assert len(one.name) <= 255


def test_a_round_longer_than_the_file_grows_it(kept, monkeypatch):
    """Lines past the file's size make it larger; every line reads back after a reopen."""
    journals, _ = kept
    monkeypatch.setattr(journal_module, "CAPACITY", 64)
    journal = journals.journal("adt", "lab")
    journal.open()
    for n in range(1, 21):
        journal.note_sending(_delivery(n))
        journal.answered(_delivery(n), DeliveryResult(Outcome.SENT, b"MSA|AA|C%d\r" % n, "AA"))
    journal.flush()
    journal.close()
    journal.open()
    assert [(u.delivery.delivery_id, u.result.response) for u in journal.unrecorded()] == [
        (n, b"MSA|AA|C%d\r" % n) for n in range(1, 21)
    ]
    journal.close()


@pytest_twisted.inlineCallbacks
def test_with_sync_the_reactor_hands_a_write_and_its_msync_to_a_pool_thread(tmp_path, monkeypatch):
    """From the reactor, a journal that syncs writes on a thread of the reactor's pool, never on its own."""
    threads = []
    monkeypatch.setattr(journal_module, "_msync", lambda mapped: threads.append(threading.current_thread()))
    journal = Journals(tmp_path, sync=True, reactor=reactor).journal("adt", "lab")
    journal.open()
    refused = yield journal.from_reactor(journal.note_sending, _delivery(1))
    journal.close()
    assert refused is None and len(threads) == 1 and threads[0] is not threading.current_thread()
