"""engine/record/identity.py: normalising, reading identifiers, finding patients by identifier or by rule."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from engine.hl7.message import Message
from engine.record.extract import read_message
from engine.record.identity import (
    DEFAULT_RULE,
    Identifier,
    IdentityRule,
    find_by_rule,
    find_known,
    pid_identifiers,
    prior_identifiers,
    survivor_of,
)
from engine.record.person import normalise
from engine.record.writer import Statements, Writer
from tests.fakes.record import NOW, RECEIVED, hl7, register

JANE = {"family": "doe", "given": "jane", "birth_date": "1970-01-01", "sex": "F"}


def facts_of(*segments: str, sender: str = "PMS", facility: str = "CLINIC"):
    """The MessageFacts of an ADT^A08 with these segments from ``sender`` at ``facility``."""
    text = hl7("ADT^A08^ADT_A01", "20240101080000", *segments, sender=sender).replace(
        f"|{sender}|CLINIC|", f"|{sender}|{facility}|", 1
    )
    return read_message(Message.parse(text), received_at=RECEIVED, local=UTC)


def pid_ids(pid: str, **sender) -> list[Identifier]:
    facts = facts_of(pid, **sender)
    return pid_identifiers(facts.patients[0].pid, facts)


@contextmanager
def lookup(engine):
    """A Writer in a transaction, as the ingestor reads the record before it applies a message."""
    with engine.begin() as connection:
        yield Writer(
            connection,
            Statements(engine.dialect),
            message_id=None,
            cause="",
            now=NOW,
            message_time=datetime(1, 1, 1, tzinfo=UTC),
        )


# -- normalise and the rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("O'Brien-Smith ", "obriensmith"),
        ("María José", "mariajose"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("Ｄｏｅ 2", "doe2"),
        ("", ""),
        (None, ""),
        ("-- .", ""),
    ],
)
def test_normalise_drops_case_accents_spaces_and_punctuation(text, key):
    """normalise keeps letters and digits, case-folded, without accents (compatibility forms folded too)."""
    assert normalise(text) == key


def test_the_default_rule_compares_every_field():
    """DEFAULT_RULE compares family, given, birth date and sex, and labels its links with their names."""
    assert DEFAULT_RULE == IdentityRule(("family", "given", "birth_date", "sex"))
    assert DEFAULT_RULE.name == "family+given+birth_date+sex"
    assert IdentityRule(("family", "birth_date")).name == "family+birth_date"


@pytest.mark.parametrize("fields", [("family", "shoe_size"), ()])
def test_a_rule_compares_a_non_empty_subset_of_the_known_fields(fields):
    """A rule of an unknown field, or of none, is a ValueError."""
    with pytest.raises(ValueError):
        IdentityRule(fields)


# -- reading identifiers --------------------------------------------------------------------------


def test_pid_identifiers_read_pid_3_then_pid_2_and_pid_4():
    """PID-3 repetitions first, then PID-2 and PID-4, each with its authority (CX-4.1, else 4.2) and type."""
    assert pid_ids("PID|1|E-2^^^EMR|P-1^^^PMS^PI~L-1^^^&1.2.3^MR|A-4^^^ALT") == [
        Identifier("PMS", "P-1", "PI"),
        Identifier("1.2.3", "L-1", "MR"),
        Identifier("EMR", "E-2", ""),
        Identifier("ALT", "A-4", ""),
    ]


def test_an_identifier_without_authority_belongs_to_the_sender():
    """Without CX-4 the authority is MSH-3@MSH-4, or MSH-3 alone when the message names no facility."""
    assert pid_ids("PID|1||P-1") == [Identifier("PMS@CLINIC", "P-1")]
    assert pid_ids("PID|1||P-1", facility="") == [Identifier("PMS", "P-1")]
    assert pid_ids("PID|1||P-1", sender="EMR") == [Identifier("EMR@CLINIC", "P-1")]


def test_a_pid_read_again_gives_its_identifiers_in_a_list_of_its_own():
    """The same PID from the same sender gives the same identifiers; a change to the list given is lost."""
    first = pid_ids("PID|1||P-1^^^PMS~S-1^^^SSA^SS")
    first.clear()
    assert pid_ids("PID|1||P-1^^^PMS~S-1^^^SSA^SS") == [
        Identifier("PMS", "P-1"),
        Identifier("SSA", "S-1", "SS"),
    ]


def test_null_and_repeated_identifiers_are_skipped():
    """An HL7 null or empty value is no identifier; the same authority and value twice is one."""
    assert pid_ids('PID|1|P-1^^^PMS|P-1^^^PMS^PI~""^^^PMS~^^^PMS|P-1^^^PMS^MR') == [
        Identifier("PMS", "P-1", "PI")
    ]


def test_identifiers_are_cut_and_replaced_as_the_database_holds_them():
    """Values keep 199 characters and authorities 227; bytes the charset could not decode become '?'."""
    (long,) = pid_ids(f"PID|1||{'V' * 300}^^^{'A' * 300}")
    assert (len(long.value), len(long.authority)) == (199, 227)
    (replaced,) = pid_ids("PID|1||P-\udce9^^^PMS")
    assert replaced.value == "P-?"


def test_prior_identifiers_read_mrg_1_then_mrg_4():
    """MRG-1 repetitions, then MRG-4 (the prior patient id of older versions)."""
    facts = facts_of("PID|1||P-1^^^PMS", "MRG|P-2^^^PMS~P-3^^^PMS|||P-4^^^PMS")
    assert prior_identifiers(facts.patients[0].mrg, facts) == [
        Identifier("PMS", "P-2"),
        Identifier("PMS", "P-3"),
        Identifier("PMS", "P-4"),
    ]


# -- finding by identifier ------------------------------------------------------------------------


def test_identifiers_the_record_does_not_know_find_nobody(feed):
    """find_known is None for no identifiers or only unknown ones."""
    register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    with lookup(feed.engine) as writer:
        assert find_known(writer, []) is None
        assert find_known(writer, [Identifier("PMS", "P-2"), Identifier("LAB", "P-1")]) is None


def test_a_known_identifier_finds_its_patient(feed):
    """The first known identifier names the patient and the reason; all known ones are listed."""
    patient_id = register(feed, "PID|1||P-1^^^PMS^PI~E-1^^^EMR^MR||DOE^JANE||19700101|F")
    with lookup(feed.engine) as writer:
        match = find_known(
            writer, [Identifier("LAB", "L-1"), Identifier("EMR", "E-1"), Identifier("PMS", "P-1")]
        )
    assert (match.patient_id, match.reason, match.known, match.conflicts) == (
        patient_id,
        f"came with EMR identifier already linked to patient {patient_id}",
        {("EMR", "E-1"), ("PMS", "P-1")},
        [],
    )
    assert match.patient["id"] == patient_id


def test_identifiers_of_two_patients_find_the_first_and_flag_the_other(feed):
    """Identifiers of two patients find the first one's patient; the other is a conflict to flag."""
    first = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    other = register(feed, "PID|1||E-9^^^EMR^MR||ROE^RICHARD||19600202|M", sender="EMR")
    with lookup(feed.engine) as writer:
        match = find_known(writer, [Identifier("PMS", "P-1"), Identifier("EMR", "E-9")])
    assert match.patient_id == first
    ((kind, other_id, identifier),) = [(c.kind, c.other_patient_id, c.identifier) for c in match.conflicts]
    assert (kind, other_id, identifier) == ("identifiers_disagree", other, Identifier("EMR", "E-9"))


def test_the_identifier_of_a_merged_patient_finds_the_survivor(feed):
    """A merged-away patient's identifier (and survivor_of its id) lead to the patient it was merged into."""
    survivor = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    prior = register(feed, "PID|1||P-2^^^PMS^PI||DOE^JANIE||19700101|F", time="20240101090000")
    merge = hl7("ADT^A40^ADT_A39", "20240102080000", "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F", "MRG|X")
    feed(merge.replace("MRG|X", "MRG|P-2^^^PMS^PI"))
    with lookup(feed.engine) as writer:
        assert find_known(writer, [Identifier("PMS", "P-2")]).patient_id == survivor
        assert survivor_of(writer, prior)["id"] == survivor
        assert survivor_of(writer, survivor)["id"] == survivor


# -- finding by rule ------------------------------------------------------------------------------


def test_without_a_rule_or_its_demographics_a_patient_is_new(feed):
    """No rule, or a demographic the rule compares missing, makes a new patient without looking."""
    register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    with lookup(feed.engine) as writer:
        assert find_by_rule(writer, [], JANE, None).patient_id is None
        assert find_by_rule(writer, [], {**JANE, "sex": ""}, DEFAULT_RULE).patient_id is None
        narrow = IdentityRule(("family", "birth_date"))
        assert find_by_rule(writer, [], {**JANE, "sex": ""}, narrow).patient_id == 1


def test_the_one_patient_whose_demographics_match_is_found(feed):
    """Exactly one patient with the rule's fields equal (normalised) is the match, with the rule's reason."""
    patient_id = register(feed, "PID|1||P-1^^^PMS^PI||Doe^Jane||19700101|f")
    register(feed, "PID|1||P-2^^^PMS^PI||DOE^JOHN||19700101|M")
    with lookup(feed.engine) as writer:
        match = find_by_rule(writer, [Identifier("LAB", "L-1")], JANE, DEFAULT_RULE)
    assert (match.patient_id, match.reason, match.conflicts) == (
        patient_id,
        f"identity rule family+given+birth_date+sex matched patient {patient_id}",
        [],
    )


def test_several_matching_patients_make_a_new_one_flagged_against_each(feed):
    """A rule matching several patients chooses none: a new patient, a rule_ambiguous conflict per match."""
    first = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    # Registered with another birth date (so the rule does not link it), then corrected to the same one.
    second = register(feed, "PID|1||E-1^^^EMR^MR||DOE^JANE||19700102|F", sender="EMR")
    feed(hl7("ADT^A08^ADT_A01", "20240101090000", "PID|1||E-1^^^EMR^MR||DOE^JANE||19700101|F", sender="EMR"))
    with lookup(feed.engine) as writer:
        match = find_by_rule(writer, [Identifier("LAB", "L-1")], JANE, DEFAULT_RULE)
    assert (first, second) == (1, 2)
    assert match.patient_id is None
    assert [(c.kind, c.other_patient_id) for c in match.conflicts] == [
        ("rule_ambiguous", first),
        ("rule_ambiguous", second),
    ]


def test_a_match_with_an_identifier_of_the_same_authority_is_a_possible_duplicate(feed):
    """A patient who already has another identifier of the message's authority is not linked: new, flagged."""
    patient_id = register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    with lookup(feed.engine) as writer:
        match = find_by_rule(writer, [Identifier("PMS", "P-9")], JANE, DEFAULT_RULE)
    assert match.patient_id is None
    ((kind, other),) = [(c.kind, c.other_patient_id) for c in match.conflicts]
    assert (kind, other) == ("possible_duplicate", patient_id)


def test_patients_merged_away_are_never_matched_by_the_rule(feed):
    """Only active patients are candidates: after a merge, the prior patient's demographics match nobody."""
    register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    register(feed, "PID|1||P-2^^^PMS^PI||ROE^JANE||19700101|F", time="20240101090000")
    merge = hl7("ADT^A40^ADT_A39", "20240102080000", "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F", "MRG|X")
    feed(merge.replace("MRG|X", "MRG|P-2^^^PMS^PI"))
    with lookup(feed.engine) as writer:
        match = find_by_rule(writer, [], {**JANE, "family": "roe"}, DEFAULT_RULE)
    assert (match.patient_id, match.conflicts) == (None, [])
