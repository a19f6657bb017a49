"""engine/fhirmap/reading.py: v2 datatypes read as FHIR datatypes."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from engine.fhirmap.reading import Field, fhir_datetime, fhir_instant, identifier, identifier_system
from engine.hl7.message import Delimiters

BERLIN_WINTER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026", "2026"),
        ("202603", "2026-03"),
        ("20260302", "2026-03-02"),
        ("2026030209", "2026-03-02T09:00:00+01:00"),
        ("202603020930", "2026-03-02T09:30:00+01:00"),
        ("20260302093015", "2026-03-02T09:30:15+01:00"),
        ("20260302093015.25", "2026-03-02T09:30:15.25+01:00"),
        ("20260302093015-0500", "2026-03-02T09:30:15-05:00"),
        ("202603020930+0000", "2026-03-02T09:30:00+00:00"),
        ("", None),
        ("soon", None),
        ("20261302", None),
    ],
)
def test_a_dtm_keeps_its_precision_and_gets_an_offset_once_it_has_a_time(text, expected):
    """Dates stay partial; a time without offset is read in the zone given, to the second at least."""
    assert fhir_datetime(text, BERLIN_WINTER) == expected


def test_an_instant_needs_a_time():
    """A date alone is no instant."""
    assert fhir_instant("20260302", UTC) is None
    assert fhir_instant("202603020930", UTC) == "2026-03-02T09:30:00+00:00"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (("NORTH", "1.2.3", "ISO"), "urn:oid:1.2.3"),
        (("", "2.16.840.1", ""), "urn:oid:2.16.840.1"),
        (("X", "https://id.example.org/mrn", "URI"), "https://id.example.org/mrn"),
        (("NORTH", "", ""), "urn:hl7engine:authority:NORTH"),
        (("St Mary's", "", ""), "urn:hl7engine:authority:St%20Mary%27s"),
        (("", "", ""), None),
    ],
)
def test_the_identifier_system_comes_from_the_assigning_authority(authority, expected):
    """HD: an OID (ISO) or URI universal id wins; else the namespace as the record names it."""
    assert identifier_system(*authority) == expected


def test_a_cx_reads_unescaped_and_null_is_empty():
    """Escapes are undone; HL7's explicit null "" reads as nothing."""
    d = Delimiters.DEFAULT
    cx = Field("A\\S\\1^^^NORTH^MR", d)
    assert identifier(cx) == {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
            "text": "MR",
        },
        "system": "urn:hl7engine:authority:NORTH",
        "value": "A^1",
        "assigner": {"display": "NORTH"},
    }
    assert identifier(Field('""^^^NORTH', d)) is None
    assert not Field('""^', d)
