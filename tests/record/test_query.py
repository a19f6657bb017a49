"""engine/record/query.py: finding patients by identifier, name and birth date; one patient whole, as JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.record import schema, view
from engine.record.query import find_patients, get_patient
from engine.record.view import plain
from tests.fakes.record import feed_journey, hl7, register


def test_find_by_identifier_name_and_birth_date(feed):
    """Any linked identifier (with or without authority), a name prefix (any case, accents), birth date."""
    feed_journey(feed)
    engine = feed.engine
    expected = [
        {
            "id": 1,
            "birth_date": "1980-05-17",
            "sex": "F",
            "names": [
                {
                    "family": "GARCÍA",
                    "given": "MARÍA",
                    "middle": "ELENA",
                    "prefix": None,
                    "suffix": None,
                    "name_type": "L",
                }
            ],
            "identifiers": [
                {"authority": a, "value": v, "type_code": t, "alias": alias}
                for a, v, t, alias in (
                    ("NORTHPMS", "PMS-100234", "PI", False),
                    ("STMARY_EMR", "MRN-556677", "MR", False),
                    ("CITYLAB", "L-9981", "PI", False),
                    ("NORTHPMS", "PMS-100299", "PI", True),
                )
            ],
        }
    ]
    assert find_patients(engine, identifier="L-9981") == expected
    assert find_patients(engine, identifier="PMS-100299", authority="NORTHPMS") == expected
    assert find_patients(engine, identifier="PMS-100299", authority="CITYLAB") == []
    assert find_patients(engine, name="garc", birthdate="1980-05-17") == expected
    assert find_patients(engine, name="María") == expected
    assert find_patients(engine, name="Maria", birthdate="1980-05-18") == []


def ids(found: list[dict]) -> list[int]:
    return [patient["id"] for patient in found]


def test_every_criterion_given_must_match(feed):
    """Identifier, name and birth date narrow one another; an authority given narrows the identifier to it."""
    doe = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    roe = register(feed, "PID|1||P-1^^^LAB^PI||ROE^JANE||19700101|F", sender="LAB")
    assert ids(find_patients(feed.engine, identifier="P-1")) == [doe, roe]
    assert ids(find_patients(feed.engine, identifier="P-1", authority="LAB")) == [roe]
    assert ids(find_patients(feed.engine, identifier="P-1", name="ro")) == [roe]
    assert ids(find_patients(feed.engine, name="jane", birthdate="1970-01-01")) == [doe, roe]
    assert ids(find_patients(feed.engine, name="jane", birthdate="1970-01-02")) == []
    assert find_patients(feed.engine, identifier="P-2") == []


def test_a_name_matches_the_start_of_a_family_or_given_name(feed):
    """A name is a prefix of the family or given name, normalised: case, accents and punctuation ignored."""
    obrien = register(feed, "PID|1||P-1^^^PMS^PI||O'BRIEN-SMITH^ÉMILE||19700101|M")
    assert ids(find_patients(feed.engine, name="obrien")) == [obrien]
    assert ids(find_patients(feed.engine, name="O'Brien Sm")) == [obrien]
    assert ids(find_patients(feed.engine, name="emi")) == [obrien]
    assert find_patients(feed.engine, name="smith") == []  # inside a name, not at its start


def test_a_name_without_letters_or_digits_is_no_criterion(feed):
    """A name that normalises to nothing (only punctuation or LIKE wildcards) filters nothing."""
    first = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    second = register(feed, "PID|1||P-2^^^PMS^PI||ROE^RICHARD||19600202|M")
    assert ids(find_patients(feed.engine, name="%_")) == [first, second]
    assert ids(find_patients(feed.engine, name="%", birthdate="1960-02-02")) == [second]


def test_a_birth_date_matches_as_stored(feed):
    """The birth date compares with the ISO text of the PID's precision: a year alone finds a year alone."""
    full = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    year = register(feed, "PID|1||P-2^^^PMS^PI||ROE^RICHARD||1960|M")
    assert ids(find_patients(feed.engine, birthdate="1970-01-01")) == [full]
    assert ids(find_patients(feed.engine, birthdate="1960")) == [year]
    assert find_patients(feed.engine, birthdate="1970") == []


def test_patients_merged_away_are_not_found(feed):
    """After a merge only the survivor is found, by its own identifiers and by the prior ones (aliases)."""
    survivor = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    register(feed, "PID|1||P-2^^^PMS^PI||DOE^JANIE||19700101|F", time="20240101090000")
    feed(
        hl7(
            "ADT^A40^ADT_A39",
            "20240102080000",
            "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F",
            "MRG|P-2^^^PMS^PI",
        )
    )
    assert ids(find_patients(feed.engine, identifier="P-2")) == [survivor]
    assert ids(find_patients(feed.engine, name="doe")) == [survivor]
    assert find_patients(feed.engine, name="janie") == []


def test_results_are_the_lowest_ids_up_to_the_limit(feed, monkeypatch):
    """At most ``limit`` patients, lowest id first; a limit is raised to 1 and cut to MAX_RESULTS."""
    registered = [
        register(feed, f"PID|1||P-{n}^^^PMS^PI||DOE^JANE||19700101|F", time=f"2024010108{n:02d}00")
        for n in range(1, 5)
    ]
    assert ids(find_patients(feed.engine, name="doe", limit=2)) == registered[:2]
    assert ids(find_patients(feed.engine, name="doe", limit=0)) == registered[:1]
    monkeypatch.setattr(view, "MAX_RESULTS", 3)
    assert ids(find_patients(feed.engine, name="doe", limit=1000)) == registered[:3]


def test_a_summary_holds_names_and_identifiers_without_bookkeeping(feed):
    """A search result is id, birth date, sex, names and identifiers, without keys, links or message ids."""
    patient_id = register(feed, "PID|1||P-1^^^PMS^PI~X-9^^^EMR^MR||DOE^JANE^Q^JR^DR^^L||1970|F")
    assert find_patients(feed.engine, identifier="X-9") == [
        {
            "id": patient_id,
            "birth_date": "1970",
            "sex": "F",
            "names": [
                {
                    "family": "DOE",
                    "given": "JANE",
                    "middle": "Q",
                    "suffix": "JR",
                    "prefix": "DR",
                    "name_type": "L",
                }
            ],
            "identifiers": [
                {"authority": "PMS", "value": "P-1", "type_code": "PI", "alias": False},
                {"authority": "EMR", "value": "X-9", "type_code": "MR", "alias": False},
            ],
        }
    ]


def test_an_unknown_patient_is_none(engine):
    """get_patient of an id the record does not hold is None."""
    assert get_patient(engine, 42) is None


def test_a_patient_shows_every_list_and_both_sides_of_merges_and_conflicts(feed):
    """get_patient holds every fact list; merges and conflicts show for either patient; no bookkeeping."""
    feed_journey(feed)
    survivor, prior = get_patient(feed.engine, 1), get_patient(feed.engine, 2)
    lists = ("identifiers", "names", "addresses", "telecoms", "contacts", "visits", "allergies", "diagnoses")
    lists += ("procedures", "coverages", "appointments", "orders", "transactions", "merges", "conflicts")
    assert all(isinstance(survivor[name], list) for name in lists)
    assert "list_digests" not in survivor and "merged_into_id" not in survivor
    assert (survivor["merged_into"], prior["merged_into"]) == (None, 1)
    assert survivor["merges"] == prior["merges"] and len(survivor["merges"]) == 1
    assert survivor["conflicts"] == prior["conflicts"] and len(survivor["conflicts"]) == 1
    assert all("family_key" not in name and "patient_id" not in name for name in survivor["names"])
    assert all("resources" in appointment for appointment in survivor["appointments"])
    assert all("observations" in order for order in survivor["orders"])
    with feed.engine.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(schema.visits)).scalar()
    assert len(survivor["visits"]) + len(prior["visits"]) == stored


def test_plain_values_are_what_json_holds():
    """Times and dates become ISO text, decimals plain text without exponent, inside dicts, lists, tuples."""
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert plain(
        {"at": moment, "on": date(2024, 1, 2), "amounts": (Decimal("1.50"), Decimal("1E+2")), "n": [1, None]}
    ) == {"at": "2024-01-02T03:04:05+00:00", "on": "2024-01-02", "amounts": ["1.5", "100"], "n": [1, None]}


@pytest.mark.parametrize("value", ["text", 3, 2.5, True, None])
def test_plain_leaves_json_values_alone(value):
    """Text, numbers, booleans and None are JSON already."""
    assert plain(value) == value
