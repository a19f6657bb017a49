"""engine/record/person.py: the demographics named without the schema are the schema's columns and lists."""

from __future__ import annotations

from engine.record import schema
from engine.record.person import DEMOGRAPHICS, LISTS


def test_the_demographics_are_columns_of_a_patient_and_its_ordered_lists():
    """Each demographic is a record_patients column or a list table of a patient's, ordered by position."""
    columns = [name for name in DEMOGRAPHICS if name not in LISTS]
    assert all(name in schema.patients.c for name in columns)
    assert set(DEMOGRAPHICS) - set(columns) == set(LISTS)
    for name in LISTS:
        assert {"patient_id", "position"} <= set(schema.TABLES[name].c.keys()), name
