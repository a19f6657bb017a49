"""engine.store.rekey: old rows sealed anew with the current key, in bounded batches, beside the engine."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.record import schema as _record_schema  # noqa: F401  (its sealed columns join the metadata)
from engine.store.cipher import CLEAR, Cipher
from engine.store.db import create_engine_for
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.rekey import rekey, sealed_columns
from engine.store.schema import messages
from tests.fakes.messages import pms_message

K1, K2 = b"1" * 32, b"2" * 32


def _keys_of(engine: sa.Engine) -> list[str | None]:
    """The key id that sealed each message's raw bytes, in id order (None: clear)."""
    with engine.connect() as connection:
        stored = connection.execute(sa.select(messages.c.raw).order_by(messages.c.id)).scalars().all()
    return [Cipher({"k": K1}, "k").key_of(raw) for raw in stored]


@pytest.fixture
def engines(store_url):
    """A function making engines on the test database with a cipher; all disposed after the test."""
    made = []

    def make(cipher: Cipher) -> sa.Engine:
        engine = create_engine_for(store_url, cipher=cipher)
        made.append(engine)
        return engine

    upgrade(make(CLEAR))
    yield make
    for engine in made:
        engine.dispose()


def test_rotation_then_rekey_in_batches_then_the_old_key_removed(engines):
    """A new key seals new rows and reads old ones; rekey reseals clear and old rows 2 a time; k1 can go."""
    MessageRepository(engines(CLEAR)).insert([pms_message(0)])
    MessageRepository(engines(Cipher({"k1": K1}, "k1"))).insert([pms_message(n) for n in range(1, 6)])
    rotated = engines(Cipher({"k1": K1, "k2": K2}, "k2"))
    repository = MessageRepository(rotated)
    [newest] = repository.insert([pms_message(6)])
    assert _keys_of(rotated) == [None, "k1", "k1", "k1", "k1", "k1", "k2"]
    assert [repository.get(n).raw for n in range(1, newest + 1)] == [pms_message(n).raw for n in range(7)]

    batches: list[tuple[str, int]] = []
    changed = rekey(rotated, batch=2, on_batch=lambda column, count: batches.append((column, count)))

    assert changed["messages.raw"] == 6 and changed["messages.ack"] == 6
    assert [count for column, count in batches if column == "messages.raw"] == [2, 2, 2, 0]
    assert _keys_of(rotated) == ["k2"] * 7
    only_new = MessageRepository(engines(Cipher({"k2": K2}, "k2")))
    assert [only_new.get(n).raw for n in range(1, newest + 1)] == [pms_message(n).raw for n in range(7)]
    assert only_new.get(1).ack == pms_message(0).ack
    assert rekey(rotated, batch=2) == dict.fromkeys(changed, 0)  # nothing left to do


def test_without_the_key_a_sealed_message_is_refused_not_shown(engines):
    """Reading a message sealed with a key that is no longer configured fails with StoreError."""
    [message_id] = MessageRepository(engines(Cipher({"k1": K1}, "k1"))).insert([pms_message(1)])
    with pytest.raises(StoreError, match="'k1', which is not configured"):
        MessageRepository(engines(Cipher({"k2": K2}, "k2"))).get(message_id)


def test_rekey_needs_a_current_key(engines):
    """Rekey with no encryption configured refuses to start."""
    with pytest.raises(StoreError, match="needs encryption"):
        rekey(engines(CLEAR))


def test_sealed_columns_are_the_content_and_the_person_data():
    """The columns rekey walks: message content, delivery payloads and answers, person data, name keys."""
    names = {f"{column.table.name}.{column.name}" for column in sealed_columns()}
    assert {"messages.raw", "messages.ack", "messages.transformed", "deliveries.payload"} <= names
    assert {"deliveries.response", "record_names.family", "record_addresses.line1"} <= names
    assert {"record_telecoms.value", "record_contacts.phone", "record_history.old_value"} <= names
    assert {"record_names.family_key", "record_names.given_key"} <= names  # clear keys become hashes
    assert "record_identifiers.value" not in names and "record_patients.birth_date" not in names


def test_rekey_empties_the_content_index_written_while_the_store_was_clear(engines):
    """Words indexed before encryption was turned on are clear text: rekey removes every index row."""
    clear = MessageRepository(engines(CLEAR))
    clear.insert([pms_message(1), pms_message(2)])
    assert clear.index_pending() == 2
    changed = rekey(engines(Cipher({"k1": K1}, "k1")))
    assert changed["message_text.terms"] == 2
    with engines(CLEAR).connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM message_text").scalar_one() == 0
