"""Generated journeys (tests/record/journeys.py) end in the same record however they arrive.

Sent once in file order, or with every message sent a second time under a new control id (each
right after itself, or the whole stream again), the record of every person is the same: the
resends change nothing. Other arrival orders of the same journeys belong here too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from engine.hl7.message import Message
from engine.record import schema
from engine.record.ingest import RecordIngestor
from engine.record.query import find_patients, get_patient
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.record import store_messages
from tests.record.journeys import SYSTEMS, file_order, journeys, render, sent_again, twice_in_a_row

SEEDS = [7, 19]
PEOPLE = 6
RECEIVED = datetime(2024, 4, 1, 12, 0, tzinfo=UTC)
# Messages stored and applied together, as the record destination's chunks are.
CHUNK = 25

# Bookkeeping of a row: which message last confirmed it (a resend is another message).
_UNCOMPARED = frozenset({"message_id"})
# Person data of a patient, as get_patient gives it.
# Which message (and merge: a repeated A40's extra row is test_a_merge_sent_twice_is_done_once's) a
# reason names.
_NUMBERED = re.compile(r"\b(message|merge) \d+")
_PERSON = ("identifiers", "names", "addresses", "telecoms", "visits", "allergies", "appointments")
_FACTS = ("orders", "transactions", "conflicts")


def feed(ingestor: RecordIngestor, stream: list[str]) -> None:
    """Store and apply the stream's messages in chunks, each with a control id of its own."""
    for start in range(0, len(stream), CHUNK):
        texts = [
            render(text, f"C{start + offset}")
            for offset, text in enumerate(stream[start : start + CHUNK], start=start)
        ]
        ids = store_messages(ingestor.engine, [text.encode() for text in texts], RECEIVED)
        results = ingestor.apply_many(
            [(message_id, Message.parse(text), RECEIVED) for message_id, text in zip(ids, texts, strict=True)]
        )
        assert all(getattr(result, "applied", False) for result in results), results


def _plain(value: Any) -> Any:
    """``value`` without the bookkeeping of each row and the numbers of messages and merges in reasons."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if key not in _UNCOMPARED}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return _NUMBERED.sub(r"\1 N", value)
    return value


def dump(engine: sa.Engine, people: list[dict[str, str]]) -> dict[str, Any]:
    """Each person's record (by their PMS id: visits, appointments, results, charges, allergies, ...).

    With how many rows each record table holds (but merges: see below) and how many values changed.
    """
    found = {}
    for ids in people:
        (patient,) = find_patients(engine, identifier=ids["pms"], authority=SYSTEMS["pms"])
        record = get_patient(engine, patient["id"])
        found[ids["pms"]] = _plain({name: record[name] for name in (*_PERSON, *_FACTS)})
    with engine.connect() as connection:
        counts = {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in schema.TABLES.values()
            if table not in (schema.applied_messages, schema.merges)
        }
    return {"people": found, "rows": counts}


def _merges(engine: sa.Engine) -> list[tuple]:
    m = schema.merges
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(sa.select(m.c.survivor_id, m.c.prior_id).order_by(m.c.id))
        ]


def _record_after(engine: sa.Engine, stream: list[str], people: list[dict[str, str]]):
    ingestor = RecordIngestor(engine, clock=lambda: RECEIVED)
    feed(ingestor, stream)
    return dump(engine, people), _merges(engine)


@pytest.fixture
def second_engine(engine, tmp_path, store_url):
    """Another database like ``engine`` (SQLite only: a file beside it)."""
    if not store_url.startswith("sqlite"):
        pytest.skip("the second database of a comparison is SQLite's")
    other = create_engine_for(f"sqlite:///{tmp_path / 'second.db'}")
    upgrade(other)
    yield other
    other.dispose()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("resend", [twice_in_a_row, sent_again], ids=["each-twice", "stream-twice"])
def test_every_message_sent_twice_leaves_the_record_as_once(engine, second_engine, seed, resend):
    """Each message sent again (new control id, same content) adds, moves and changes nothing."""
    found = journeys(seed, PEOPLE)
    people = [journey.ids for journey in found]
    stream = file_order(found)
    once, _ = _record_after(engine, stream, people)
    twice, _ = _record_after(second_engine, resend(stream), people)
    assert twice == once
    # The journeys are what they say: each person has all of it.
    for record in once["people"].values():
        assert [a["status"] for a in record["appointments"]] == ["Booked", "Cancelled"]
        assert len(record["transactions"]) == 2
        assert {o["status"] for order in record["orders"] for o in order["observations"]} == {"C", "F"}


@pytest.mark.parametrize("resend", [twice_in_a_row, sent_again], ids=["each-twice", "stream-twice"])
def test_a_merge_sent_twice_is_done_once(engine, second_engine, resend):
    """An A40 of the same prior and survivor sent again records no second merge."""
    found = journeys(SEEDS[0], PEOPLE)
    people = [journey.ids for journey in found]
    stream = file_order(found)
    _, once = _record_after(engine, stream, people)
    _, twice = _record_after(second_engine, resend(stream), people)
    assert once and twice == once
