"""engine.record.writer: rows read and matched on the driver are the rows SQLAlchemy reads and selects."""

from __future__ import annotations

from datetime import UTC, timedelta

import sqlalchemy as sa

from engine.record import schema
from engine.record.pending import Pending
from engine.record.writer import Statements, Writer
from engine.store.driver import TableCursor, tables
from tests.fakes.record import NOW, RECEIVED, store_message


def _patients(engine, count: int) -> None:
    """``count`` patients, each as of its own time (one message a minute), some with a deceased time."""
    message_id = store_message(engine, b"MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101||ADT^A04|1|P|2.5.1\r")
    with engine.begin() as connection:
        connection.execute(
            schema.patients.insert(),
            [
                {
                    "created_at": NOW,
                    "updated_at": NOW,
                    "as_of": RECEIVED + timedelta(minutes=n),
                    "message_id": message_id,
                    "deceased_at": RECEIVED if n % 2 else None,
                    "sex": "F",
                    "language": "E" * 100,
                }
                for n in range(count)
            ],
        )


def test_rows_are_read_as_sqlalchemy_reads_them_also_once_times_are_forgotten(engine, monkeypatch):
    """Rows read by Writer.rows equal SQLAlchemy's, again and again as remembered times are forgotten."""
    monkeypatch.setattr(tables, "TIMES_KEPT", 3)
    _patients(engine, 5)
    with engine.connect() as connection:
        expected = [
            dict(row)
            for row in connection.execute(
                sa.select(schema.patients).order_by(schema.patients.c.id)
            ).mappings()
        ]
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        for _ in range(3):
            reader = Writer(connection, statements, message_id=None, cause="test", now=NOW, message_time=NOW)
            assert reader.rows(schema.patients, {"sex": "F"}) == expected
    assert all(row["as_of"].tzinfo == UTC for row in expected)


def test_first_matches_as_a_select_would(engine):
    """Writer.first picks among rows read once what select_one picks: fitted values, IS NULL, lowest id."""
    _patients(engine, 4)
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        w = Writer(connection, statements, message_id=None, cause="test", now=NOW, message_time=NOW)
        rows = w.rows(schema.patients, {"sex": "F"})
        keys = (
            {"sex": "F"},
            {"sex": "F", "deceased_at": None},
            {"deceased_at": RECEIVED},
            {"language": "E" * 120},
            {"sex": "M"},
        )
        assert [w.first(schema.patients, rows, key) for key in keys] == [
            w.select_one(schema.patients, key) for key in keys
        ]
        assert [(w.first(schema.patients, rows, key) or {}).get("id") for key in keys] == [1, 1, 2, 1, None]


def test_identified_reads_each_known_identifier_with_its_patient_row(engine):
    """Writer.identified answers known (authority, value) pairs, in link order, with their patients' rows."""
    _patients(engine, 3)
    with engine.begin() as connection:
        connection.execute(
            schema.identifiers.insert(),
            [
                {
                    "patient_id": patient_id,
                    "authority": "PMS",
                    "value": f"P-{n}",
                    "type_code": "MR",
                    "source_system": "PMS",
                    "alias": False,
                    "link_reason": "test",
                    "linked_at": NOW,
                    "as_of": NOW,
                }
                for n, patient_id in enumerate((2, 1, 2))
            ],
        )
    with engine.begin() as connection:
        w = Writer(
            connection, Statements(engine.dialect), message_id=None, cause="test", now=NOW, message_time=NOW
        )
        patients = {patient_id: w.select_one(schema.patients, {"id": patient_id}) for patient_id in (1, 2)}
        wanted = [("PMS", f"P-{n}") for n in range(150)][::-1]
        assert w.identified(wanted) == [
            ("PMS", "P-0", patients[2]),
            ("PMS", "P-1", patients[1]),
            ("PMS", "P-2", patients[2]),
        ]
        assert w.identified([("LAB", "P-0")]) == []


def test_a_patient_the_writer_created_has_the_rows_it_inserted_and_any_the_connection_added(engine):
    """A new patient's rows are those the writer inserted; after a statement of its own, the database says."""
    message_id = store_message(engine, b"MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101||ADT^A04|1|P|2.5.1\r")
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        w = Writer(connection, statements, message_id=message_id, cause="test", now=NOW, message_time=NOW)
        patient_id = w.insert(schema.patients, {"created_at": NOW, "updated_at": NOW})
        key = {"patient_id": patient_id}
        assert w.rows(schema.allergies, key) == []
        w.insert(schema.allergies, {**key, "code": "A1"})
        assert [row["code"] for row in w.rows(schema.allergies, key)] == ["A1"]
        # A statement the writer does not follow may give the patient rows: it asks the database again.
        w.connection.execute(schema.diagnoses.insert().values(patient_id=patient_id, code="D1", as_of=NOW))
        assert [row["code"] for row in w.rows(schema.diagnoses, key)] == ["D1"]
        other = Writer(connection, statements, message_id=message_id, cause="test", now=NOW, message_time=NOW)
        assert [row["code"] for row in other.rows(schema.allergies, key)] == ["A1"]


def test_a_visit_the_writer_created_has_the_rows_it_inserted_until_an_update_of_their_table(engine):
    """A new visit's diagnoses are those inserted; deleting none deletes nothing; an update asks again."""
    message_id = store_message(engine, b"MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101||ADT^A01|1|P|2.5.1\r")
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        w = Writer(connection, statements, message_id=message_id, cause="test", now=NOW, message_time=NOW)
        patient_id = connection.execute(
            schema.patients.insert().values(created_at=NOW, updated_at=NOW, as_of=NOW)
        ).inserted_primary_key[0]
        elsewhere = w.insert(schema.diagnoses, {"patient_id": patient_id, "code": "D0"})
        visit_id = w.insert(
            schema.visits, {"patient_id": patient_id, "visit_number": "V1", "status": "active"}
        )
        key = {"patient_id": patient_id, "visit_id": visit_id}
        assert w.rows(schema.diagnoses, key) == []
        w.delete(schema.diagnoses, key)  # none to delete: the patient's other diagnosis stays
        assert [row["code"] for row in w.rows(schema.diagnoses, {"patient_id": patient_id})] == ["D0"]
        # An update of a diagnosis may put it under the new visit: the database is asked again.
        row = w.select_one(schema.diagnoses, {"id": elsewhere})
        w.update(schema.diagnoses, row, {"visit_id": visit_id})
        assert [row["code"] for row in w.rows(schema.diagnoses, key)] == ["D0"]
        w.insert(schema.visits, {"patient_id": patient_id, "visit_number": "V2", "status": "active"})
        assert len(w.rows(schema.visits, {"patient_id": patient_id})) == 2


def test_a_new_patients_rows_are_matched_in_memory_and_only_a_possible_match_asks_the_database(engine):
    """A key no row inserted under a new patient could match finds none without writing pending rows.

    A key one could match (the same code, text equal once fitted, a time) writes them and selects.
    """
    message_id = store_message(engine, b"MSH|^~\\&|PMS|CLINIC|HUB|REGION|20240101||ADT^A04|1|P|2.5.1\r")
    statements = Statements(engine.dialect)
    with engine.begin() as connection:
        pending = Pending(statements.tables, TableCursor(connection, statements.tables), together=True)
        w = Writer(
            connection,
            statements,
            message_id=message_id,
            cause="t",
            now=NOW,
            message_time=NOW,
            pending=pending,
        )
        patient_id = w.insert(schema.patients, {"created_at": NOW, "updated_at": NOW})
        w.add(schema.allergies, {"patient_id": patient_id, "code": "A1", "text": None, "severity": "x" * 300})
        for miss in ({"code": "A2"}, {"code": None, "text": "A1"}, {"code": "A1", "text": "other"}):
            assert w.rows(schema.allergies, {"patient_id": patient_id, **miss}) == [], miss
            assert pending.holds(schema.allergies), miss  # nothing written to find that out
        # text compared as stored: the severity as fitted to its column's length matches
        fitted = {"severity": "x" * 300 + "y"}
        assert [row["code"] for row in w.rows(schema.allergies, {"patient_id": patient_id, **fitted})] == [
            "A1"
        ]
        assert not pending.holds(schema.allergies)
        w.add(schema.allergies, {"patient_id": patient_id, "code": "A3", "identified_date": "2024"})
        assert [
            row["code"] for row in w.rows(schema.allergies, {"patient_id": patient_id, "code": "A3"})
        ] == ["A3"]
        assert w.rows(schema.allergies, {"patient_id": patient_id, "code": "A4"}) == []
