"""Content search (MessageQuery.text): an index of names, identifiers and results kept per message."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from engine.hl7.terms import MAX_TERMS
from engine.model import NewDelivery, Status
from engine.store.cipher import Cipher
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.reads import ContentSearchOff, MessageQuery
from engine.store.schema import messages
from tests.fakes.messages import new_message

_ORU = (
    "MSH|^~\\&|LIS|NORTH|EHR|SOUTH|20260101120000||ORU^R01^ORU_R01|R{n}|P|2.5.1\r"
    "PID|1||{mrn}^^^HOSP^MR||{family}^{given}||{born}|F\r"
    "OBR|1||LAB{n}|GLU^Glucose\r"
    "OBX|1|NM|GLU^Glucose||{value}|mmol/L\r"
)


def _result(n: int, family: str, given="ANNA", mrn="", born="19800101", value="5.4", **columns):
    """ORU^R01 number ``n`` (control id R<n>) of patient family^given, one glucose result ``value``."""
    raw = _ORU.format(n=n, mrn=mrn or f"M{n}", family=family, given=given, born=born, value=value).encode()
    return new_message(raw, **columns)


def _found(repository: MessageRepository, text: str, **criteria) -> list[str]:
    return [s.control_id for s in repository.search(MessageQuery(text=text, **criteria))]


def _stored(repository: MessageRepository, new_messages) -> list[int]:
    """Insert the messages and index them (as ContentIndexer does shortly after): their ids."""
    ids = repository.insert(new_messages)
    while repository.index_pending(limit=1000):
        pass
    return ids


def test_a_message_is_found_by_name_identifier_birth_date_and_observation(repository):
    """Names (by a word's start, any case), MRNs, birth dates and OBX values find it; the header does not."""
    _stored(
        repository,
        [
            _result(1, "SMITH", mrn="MRN77"),
            _result(2, "SMYTHE", born="19911231", value="POSITIVE"),
            _result(3, "DOE"),
        ],
    )
    assert _found(repository, "smith") == ["R1"]
    assert _found(repository, "Sm") == ["R2", "R1"]
    assert _found(repository, "smith anna") == ["R1"]
    assert _found(repository, "smith, bob") == []
    assert _found(repository, "mrn77") == ["R1"]
    assert _found(repository, "19911231") == ["R2"]
    assert _found(repository, "positive") == ["R2"]
    assert _found(repository, "LIS") == []  # MSH-3 is no content word (search it with sender=)
    assert _found(repository, "s", message_type="ORU", before_id=2) == ["R1"]
    assert repository.count(MessageQuery(text="sm")) == 2


def test_messages_are_indexed_after_they_are_stored_oldest_first_a_batch_at_a_time(repository):
    """Intake does not index: index_pending does, in id order, ``limit`` at a time, each message once."""
    delivery = NewDelivery("out", Status.QUEUED, "OUT1", b"MSH|^~\\&|X\r")
    processed = dataclasses.replace(_result(1, "QUIXOTL"), status=Status.QUEUED, deliveries=(delivery,))
    repository.insert([processed, _result(2, "QUIXOTL"), _result(3, "QUIXOTL")])
    assert _found(repository, "quixotl") == []
    assert repository.index_pending(limit=2) == 2
    assert _found(repository, "quixotl") == ["R2", "R1"]
    assert repository.index_pending(limit=2) == 1
    assert repository.index_pending(limit=2) == 0
    assert _found(repository, "quixotl") == ["R3", "R2", "R1"]


def test_escapes_do_not_split_words_and_words_past_the_300th_are_found_on_sqlite(repository, backend):
    """An escape is no word on either database; SQLite's FTS5, given the fields' text, keeps every word."""
    many = " ".join(f"w{n}x" for n in range(MAX_TERMS + 10))
    _stored(repository, [_result(1, "O\\T\\NEILL", value="HIGH\\.br\\LOW"), _result(2, "ROE", value=many)])
    assert _found(repository, "neill") == _found(repository, "o") == _found(repository, "low") == ["R1"]
    assert _found(repository, "t") == _found(repository, "br") == []
    assert _found(repository, f"w{MAX_TERMS - 20}x") == ["R2"]  # within the first 300 (PID's and OBR's first)
    assert _found(repository, f"w{MAX_TERMS + 5}x") == (["R2"] if backend == "sqlite" else [])


@pytest.mark.parametrize("pruned_first", [True, False])
def test_a_pruned_message_is_not_found_by_what_it_said(repository, pruned_first):
    """Pruned before it is indexed, or after (a trigger drops its row): not found by its content."""
    [first, _] = repository.insert([_result(1, "ZEBEDEE"), _result(2, "ZEBEDEE")])
    if not pruned_first:
        repository.index_pending()
    with repository.engine.begin() as connection:
        connection.execute(
            sa.update(messages).where(messages.c.id == first).values(raw=b"", pruned_at=sa.func.now())
        )
    repository.index_pending()
    assert _found(repository, "zebedee") == ["R2"]


def test_a_query_without_a_word_is_refused():
    """Punctuation alone would match everything: it is no content search."""
    with pytest.raises(ValueError, match="letter or digit"):
        MessageQuery(text=" ,.^ ")


def test_with_content_encrypted_nothing_is_indexed_and_a_content_search_says_so(store_url, engine):
    """Sealed content keeps no clear index: no rows are written and a search by content is refused."""
    sealed = create_engine_for(store_url, cipher=Cipher({"k": b"k" * 32}, "k"))
    try:
        repository = MessageRepository(sealed)
        repository.insert([_result(1, "SMITH")])
        assert repository.index_pending() == 0
        with pytest.raises(ContentSearchOff, match="encrypted"):
            repository.search(MessageQuery(text="smith"))
        assert repository.search(MessageQuery(control_id="R1"))
        with sealed.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM message_text").scalar_one() == 0
    finally:
        sealed.dispose()


def _captured_search(repository: MessageRepository, query: MessageQuery) -> tuple[str, object]:
    """The SQL and parameters repository.search sends for ``query``, as the driver got them."""
    seen = []

    def capture(connection, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    sa.event.listen(repository.engine, "before_cursor_execute", capture)
    try:
        repository.search(query)
    finally:
        sa.event.remove(repository.engine, "before_cursor_execute", capture)
    return seen[-1]


def test_at_twenty_thousand_messages_the_search_reads_the_index(repository, backend):
    """The plan of a content search goes through FTS5 (SQLite) or the GIN index (PostgreSQL), no scan."""
    names = ("SMITH", "JONES", "BROWN", "TAYLOR", "WILSON", "EVANS", "THOMAS", "ROBERTS")
    for start in range(0, 20_000, 1000):
        _stored(
            repository,
            [_result(n, f"{names[n % 8]}{n}", given=f"G{n % 97}") for n in range(start, start + 1000)],
        )
    with repository.engine.begin() as connection:  # fresh statistics, as autovacuum would keep them
        if backend == "postgresql":
            connection.exec_driver_sql("ANALYZE")
    query = MessageQuery(text="smith1232")
    assert _found(repository, "smith1232") == ["R12328", "R12320", "R1232"]  # a word's start
    sql, parameters = _captured_search(repository, query)
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with repository.engine.connect() as connection:
        plan = "\n".join(str(row[-1]) for row in connection.exec_driver_sql(explain + sql, parameters))
    if backend == "sqlite":  # read from the index's matches, newest first; each message by its id
        assert "VIRTUAL TABLE INDEX" in plan and "SCAN messages" not in plan, plan
        assert "SEARCH messages USING INTEGER PRIMARY KEY" in plan, plan
    else:
        assert "ix_message_text_terms" in plan and "Seq Scan on messages" not in plan, plan
