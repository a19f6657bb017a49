"""engine/record/person.py: the demographics named without the schema are the schema's columns and lists."""

from __future__ import annotations

import itertools
import unicodedata

from engine.record import schema
from engine.record.person import DEMOGRAPHICS, LISTS, normalise


def test_the_demographics_are_columns_of_a_patient_and_its_ordered_lists():
    """Each demographic is a record_patients column or a list table of a patient's, ordered by position."""
    columns = [name for name in DEMOGRAPHICS if name not in LISTS]
    assert all(name in schema.patients.c for name in columns)
    assert set(DEMOGRAPHICS) - set(columns) == set(LISTS)
    for name in LISTS:
        assert {"patient_id", "position"} <= set(schema.TABLES[name].c.keys()), name


def test_ascii_text_normalises_as_any_text_does():
    """normalise's ASCII shortcut gives what NFKD, casefold and the alphanumerics give, every ASCII pair."""
    ascii_ = [chr(code) for code in range(128)]
    for pair in itertools.product(ascii_, repeat=2):
        text = "".join(pair) + " O'Brien-Smith 2"
        decomposed = unicodedata.normalize("NFKD", text).casefold()
        assert normalise(text) == "".join(char for char in decomposed if char.isalnum()), text
    assert normalise("Müller") == "muller" and normalise(None) == normalise("") == ""
