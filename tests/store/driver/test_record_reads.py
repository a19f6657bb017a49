"""engine/store/driver/record_reads.py: the stdlib's reads of the record answer as through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.record import schema, view
from engine.record.ingest import RecordIngestor
from engine.record.operations import Operator, RecordOperator
from engine.record.query import RecordReads
from engine.store.cipher import CLEAR, SEALED, Cipher
from engine.store.db import create_engine_for
from engine.store.driver import SQLiteReads
from engine.store.driver.record_reads import COLUMNS, DECIMAL_SCALE
from engine.store.migrations import upgrade
from engine.store.schema import UTCDateTime
from tests.fakes.record import JOURNEY, NOW, Feeder, corpus_messages, hl7

SEALING = Cipher({"k": b"k" * 32}, "k", index=b"i" * 32)
#: Record tables that neither `patient find` nor `show` reads (the history has its own API query).
NOT_READ = {"record_history", "record_applied_messages"}
#: Two registrations of one person by two systems, the later one with a new address and phone.
PMS_PID = "PID|1||P-77^^^PMS^MR||ZOLA^ÉMILE||19600101|M|||1 Old Rd^^Town^ST^11111||555-0100||||||123-45-6789"
EMR_PID = "PID|1||E-77^^^EMR^MR||ZOLA^EMILE||19600101|M|||9 New Ave^^City^ST^22222||555-0199"


def _kind(column: sa.Column) -> str:
    """A column's kind as record_reads names it, from its SQLAlchemy type and info."""
    if column.info.get(SEALED):
        return "sealed"
    kinds = (
        (UTCDateTime, "time"),
        (sa.Boolean, "flag"),
        (sa.JSON, "json"),
        (sa.Float, ""),
        (sa.Numeric, "decimal"),
    )
    return next((kind for kind_type, kind in kinds if isinstance(column.type, kind_type)), "")


def _fill(path: Path, cipher: Cipher) -> sa.Engine:
    """A record of the journey, the corpus (SSNs, results, charges, merges) and an operator's link."""
    engine = create_engine_for(f"sqlite:///{path}", cipher=cipher)
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    for name in JOURNEY:
        feed(name)
    for _, text in corpus_messages():
        feed(text)
    first = feed(hl7("ADT^A04^ADT_A01", "20240301080000", PMS_PID))[1].patient_id
    second = feed(hl7("ADT^A04^ADT_A01", "20240302080000", EMR_PID, sender="EMR"))[1].patient_id
    assert first != second  # the strict rule flagged them for review: an operator links them
    RecordOperator(engine).link(first, second, reason="same man", by=Operator("tester", "cli"))
    return engine


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, tuple[Path, Cipher, sa.Engine]]:
    """{"clear": ..., "sealed": ...}: (the store's file, its cipher, a SQLAlchemy engine on it)."""
    folder = tmp_path_factory.mktemp("record_reads")
    made = {
        name: (folder / f"{name}.db", cipher, _fill(folder / f"{name}.db", cipher))
        for name, cipher in (("clear", CLEAR), ("sealed", SEALING))
    }
    yield made
    for _, _, engine in made.values():
        engine.dispose()


def _typed(value):
    """``value`` with each leaf's type beside it: a comparison then tells True from 1, 1.5 from "1.5"."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return type(value).__name__, value


def _same(ours: list | dict, theirs: list | dict) -> None:
    """Each item (a table's rows, a patient, a search's result) of both readers is the same, types too.

    Compared one by one, so that a difference is shown small (pytest's diff of the whole is slow).
    """
    assert len(ours) == len(theirs)
    for key in ours if isinstance(ours, dict) else range(len(ours)):
        mine, other = _typed(ours[key]), _typed(theirs[key])
        if isinstance(mine, list) and len(mine) == len(other):
            for row, other_row in zip(mine, other, strict=True):
                assert row == other_row, key
        assert mine == other, key


def _both(store: tuple[Path, Cipher, sa.Engine], read) -> tuple:
    """``read(reader)`` through SQLAlchemy and through sqlite3 on the same store."""
    path, cipher, engine = store
    with RecordReads(engine).record("reading") as reader:
        through_sqlalchemy = read(reader)
    reads = SQLiteReads.open(path, cipher)
    try:
        with reads.record("reading") as reader:
            through_sqlite3 = read(reader)
    finally:
        reads.close()
    return through_sqlalchemy, through_sqlite3


def test_the_columns_read_are_the_record_tables_columns_with_their_kinds():
    """Every record table `show` reads, every column with its kind: a migration adding one fails here."""
    assert set(COLUMNS) == set(schema.TABLES) - NOT_READ
    for name, columns in COLUMNS.items():
        table = schema.TABLES[name]
        assert columns == {column.name: _kind(column) for column in table.c}, name
        assert list(columns) == [column.name for column in table.c], name
        for column in table.c:
            if _kind(column) == "decimal":
                assert column.type.scale == DECIMAL_SCALE, (name, column.name)


@pytest.mark.parametrize("kind", ["clear", "sealed"])
def test_every_row_of_every_table_reads_alike(stores, kind):
    """Each record table's rows, all columns, typed (times, flags, JSON, decimals) and person data opened."""
    store = stores[kind]
    with store[2].connect() as connection:
        ids = {
            name: connection.execute(sa.select(schema.TABLES[name].c.id)).scalars().all() for name in COLUMNS
        }
    assert all(ids.values()), {name: len(found) for name, found in ids.items()}  # every table holds rows

    def read(reader) -> dict[str, list[dict]]:
        return {name: reader.rows(name, ("id",), found, drop=()) for name, found in ids.items()}

    through_sqlalchemy, through_sqlite3 = _both(store, read)
    _same(through_sqlite3, through_sqlalchemy)
    ssns = [row["ssn"] for row in through_sqlite3["record_patients"] if row["ssn"]]
    assert "123-45-6789" in ssns  # opened, not the sealed text
    assert any(row["amount"] is not None for row in through_sqlite3["record_transactions"])


@pytest.mark.parametrize("kind", ["clear", "sealed"])
def test_every_patient_shows_alike(stores, kind):
    """`patient show` of every patient (merged away or not, linked, unknown) is the same document."""
    with stores[kind][2].connect() as connection:
        ids = connection.execute(sa.select(schema.patients.c.id)).scalars().all()
    wanted = [*ids, max(ids) + 1]
    through_sqlalchemy, through_sqlite3 = _both(
        stores[kind], lambda reader: [view.get_patient(reader, patient_id) for patient_id in wanted]
    )
    _same(through_sqlite3, through_sqlalchemy)
    assert through_sqlite3[-1] is None
    [linked] = [person for person in through_sqlite3 if _is_zola(person)]
    assert linked["addresses"][0]["line1"] == "9 New Ave"  # the prior's newer address, through the link
    assert any(person and person["merges"] and person["conflicts"] for person in through_sqlite3)


def _is_zola(person: dict | None) -> bool:
    """The survivor of the operator's link: who has the PMS registration's identifier."""
    return person is not None and any(identifier["value"] == "P-77" for identifier in person["identifiers"])


def _searches(stores) -> list[dict]:
    """Searches by every identifier (with and without its authority), name starts and wholes, birth dates."""
    i = schema.identifiers.c
    with stores["clear"][2].connect() as connection:  # the clear store's names are clear
        identifiers = connection.execute(sa.select(i.authority, i.value)).all()
        births = connection.execute(sa.select(schema.patients.c.birth_date).distinct()).scalars().all()
        names = connection.execute(sa.select(schema.names.c.family).distinct()).scalars().all()
    searches = [{"identifier": value} for _, value in identifiers]
    searches += [{"identifier": value, "authority": authority} for authority, value in identifiers]
    for name in sorted(name for name in names if name):
        searches += [{"name": name}, {"name": name[:2]}, {"name": name.lower(), "birthdate": births[0]}]
    searches += [{"birthdate": birth} for birth in births if birth]
    searches += [{"name": "_%"}, {"name": "Émile"}, {"name": "emi", "limit": 1}, {"name": "nobody"}]
    return searches


@pytest.mark.parametrize("kind", ["clear", "sealed"])
def test_every_search_finds_alike(stores, kind):
    """`patient find` by identifier (and authority), name (start, whole, accents, no letter), birth, limit."""
    searches = _searches(stores)
    through_sqlalchemy, through_sqlite3 = _both(
        stores[kind], lambda reader: [view.find_patients(reader, **search) for search in searches]
    )
    _same(through_sqlite3, through_sqlalchemy)
    assert sum(1 for found in through_sqlite3 if found) > len(searches) // 2


def test_a_clear_record_read_with_a_key_finds_by_prefix_and_whole_name(stores):
    """Encryption switched on over a clear record, before rekey: both find by the clear keys' prefixes."""
    path, _, _ = stores["clear"]
    engine = create_engine_for(f"sqlite:///{path}", cipher=SEALING)
    try:
        searches = [{"name": "zo"}, {"name": "zola"}, {"name": "emile"}]
        through_sqlalchemy, through_sqlite3 = _both(
            (path, SEALING, engine),
            lambda reader: [view.find_patients(reader, **search) for search in searches],
        )
    finally:
        engine.dispose()
    _same(through_sqlite3, through_sqlalchemy)
    assert all(through_sqlite3)
