"""engine/record/pending.py: rows written later and together, yet seen by each read that could see them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.record import schema
from engine.record.pending import Pending, RowsRefused
from engine.record.writer import Statements, Writer
from engine.store.driver import TableCursor
from tests.fakes.record import NOW, store_message

_HEADER = b"MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101||ADT^A04|1|P|2.5.1\r"


def _writers(connection, statements, message_id, *, together=True):
    """Two Writers (two messages of one chunk) sharing one Pending, and the Pending."""
    pending = Pending(statements.tables, TableCursor(connection, statements.tables), together=together)
    return [
        Writer(
            connection,
            statements,
            message_id=message_id,
            cause="test",
            now=NOW,
            message_time=NOW,
            pending=pending,
        )
        for _ in range(2)
    ], pending


def _identifier(patient_id: int, value: str) -> dict:
    return {
        "patient_id": patient_id,
        "authority": "PMS",
        "value": value,
        "type_code": "MR",
        "source_system": "PMS",
        "alias": False,
        "link_reason": "test",
        "linked_at": NOW,
    }


def test_a_read_that_could_find_pending_rows_writes_them_first_and_no_other_does(engine):
    """A select by the key of a pending row finds it; one by another patient's id leaves the rows waiting."""
    message_id = store_message(engine, _HEADER)
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        (first, second), pending = _writers(connection, statements, message_id)
        jane, john = (first.insert(schema.patients, {"created_at": NOW, "updated_at": NOW}) for _ in range(2))
        first.add(schema.allergies, {"patient_id": jane, "code": "PCN"})
        first.insert_many(schema.identifiers, [_identifier(jane, "P-1")])

        assert second.rows(schema.allergies, {"patient_id": john}) == []
        assert second.identified([("PMS", "P-2")]) == []
        assert pending.holds(schema.allergies) and pending.holds(schema.identifiers)
        assert [row["code"] for row in second.rows(schema.allergies, {"patient_id": jane})] == ["PCN"]
        found = second.identified([("PMS", "P-1")])
        assert [(value, row["id"]) for _, value, row in found] == [("P-1", jane)]
        assert not pending.holds(schema.allergies) and not pending.holds(schema.identifiers)


def test_a_delete_and_an_insert_with_its_id_write_the_pending_rows_of_their_table_first(engine):
    """A delete removes the pending rows it matches; an insert asking its id keeps ids in the given order."""
    message_id = store_message(engine, _HEADER)
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        (first, second), pending = _writers(connection, statements, message_id)
        jane = first.insert(schema.patients, {"created_at": NOW, "updated_at": NOW})
        first.add(schema.contacts, {"patient_id": jane, "position": 1, "family": "DOE"})
        second.delete(schema.contacts, {"patient_id": jane})
        first.add(schema.conflicts, {"kind": "first", "patient_id": jane, "detail": "", "created_at": NOW})
        later = second.insert(
            schema.conflicts, {"kind": "second", "patient_id": jane, "detail": "", "created_at": NOW}
        )
        pending.write()
        c = schema.conflicts
        kinds = connection.execute(sa.select(c.c.kind, c.c.id).order_by(c.c.id)).all()
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar() == 0
    assert [kind for kind, _ in kinds] == ["first", "second"] and kinds[1][1] == later


@pytest.mark.parametrize("together", [True, False])
def test_refused_rows_are_nobody_s_together_and_their_message_s_alone(engine, together):
    """The database refusing rows written together raises RowsRefused; written per message, its StoreError."""
    message_id = store_message(engine, _HEADER)
    statements = Statements(engine.dialect)
    with pytest.raises(RowsRefused if together else StoreError), engine.begin() as connection:
        (first, _), pending = _writers(connection, statements, message_id, together=together)
        first.add(schema.allergies, {"patient_id": 424242, "code": "PCN"})  # no such patient
        pending.write()
