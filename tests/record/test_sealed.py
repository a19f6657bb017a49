"""The record with encryption at rest: the same answers as in clear, its person data unreadable."""

from __future__ import annotations

import sqlalchemy as sa

from engine.record import schema
from engine.record.ingest import RecordIngestor
from engine.record.query import find_patients, get_patient
from engine.store.cipher import CLEAR, TEXT_PREFIX, Cipher
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.rekey import rekey
from tests.fakes.record import JOURNEY, NOW, PID, Feeder, corpus_messages, register


def _record(url: str, cipher: Cipher) -> tuple[list, dict, list, sa.Engine]:
    """Feed the journey and the corpus; (results, every patient by id, a whole-name search, engine)."""
    engine = create_engine_for(url, cipher=cipher)
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    results = [feed(name)[1] for name in JOURNEY]
    results += [feed(text)[1] for _, text in corpus_messages()]
    with engine.connect() as connection:
        ids = connection.execute(sa.select(schema.patients.c.id).order_by("id")).scalars().all()
    people = {patient_id: get_patient(engine, patient_id) for patient_id in ids}
    family = people[ids[0]]["names"][0]["family"]
    return results, people, find_patients(engine, name=family.lower()), engine


def test_the_sealed_record_answers_as_the_clear_one(tmp_path):
    """Journey and corpus (merges, updates, history) give the same results, patients and name search sealed.

    And no name, address line, phone or history value is stored in clear.
    """
    clear = _record(f"sqlite:///{tmp_path / 'clear.db'}", CLEAR)
    sealed = _record(f"sqlite:///{tmp_path / 'sealed.db'}", Cipher({"k": b"k" * 32}, "k", index=b"i" * 32))
    assert sealed[:3] == clear[:3]
    assert clear[2]  # the name search found someone
    engine = sealed[3]
    n, a, h = schema.names.c, schema.addresses.c, schema.history.c
    with engine.connect() as connection:
        stored = [
            value
            for statement in (
                sa.select(n.family, n.given, n.family_key),
                sa.select(a.line1, a.city),
                sa.select(schema.telecoms.c.value),
                sa.select(h.old_value, h.new_value),
            )
            for row in connection.execute(statement)
            for value in row
            if value is not None
        ]
    assert stored and all(value.startswith(("\x1bhk:", TEXT_PREFIX)) for value in stored)
    for result in (clear, sealed):
        result[3].dispose()


def test_a_record_written_in_clear_still_links_once_sealed_before_and_after_rekey(tmp_path):
    """Encryption switched on over a clear record: the identity rule and name search find its people.

    Before rekey by their clear name keys, after it by the hashed ones.
    """
    url = f"sqlite:///{tmp_path / 'record.db'}"
    clear = create_engine_for(url)
    upgrade(clear)
    first = register(Feeder(clear, RecordIngestor(clear, clock=lambda: NOW)), PID)
    sealed = create_engine_for(url, cipher=Cipher({"k": b"k" * 32}, "k", index=b"i" * 32))
    feed = Feeder(sealed, RecordIngestor(sealed, clock=lambda: NOW))
    assert [p["id"] for p in find_patients(sealed, name="doe")] == [first]
    assert register(feed, PID.replace("P-1^^^PMS", "E-7^^^EMR"), sender="EMR") == first
    rekey(sealed)
    assert [p["id"] for p in find_patients(sealed, name="doe")] == [first]
    assert register(feed, PID.replace("P-1^^^PMS", "L-3^^^LAB"), sender="LAB") == first
    with sealed.connect() as connection:
        keys = connection.execute(sa.select(schema.names.c.family_key)).scalars().all()
    assert keys and all(key.startswith("\x1bhk:") for key in keys)
    clear.dispose()
    sealed.dispose()
