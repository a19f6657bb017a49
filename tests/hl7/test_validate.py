"""Validation against hl7apy's structures: findings with locations and 0357 codes, never an exception."""

from __future__ import annotations

import random

import pytest

from engine.errors import HL7Error
from engine.hl7.ack import ERROR_TEXTS
from engine.hl7.batch import looks_like_batch, split_batch
from engine.hl7.charset import decode
from engine.hl7.message import parse_path
from engine.hl7.structure import structure_of
from engine.hl7.validate import Finding, validate
from tests.fakes.corpus import corpus_entries

ADT = (
    "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ADT^A01^ADT_A01|C1|P|2.5.1\r"
    "EVN|A01|20260101120000\r"
    "PID|1||P1^^^PMS^MR||DOE^JOHN||19800101|M\r"
    "PV1|1|I\r"
)
ORM = (
    "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ORM^O01^ORM_O01|C2|P|2.3\r"
    "PID|1||P1||DOE^JOHN\r"
    "ORC|NW|1\r"
    "OBR|1|1||CBC\r"
    "OBX|1|NM|WBC||7.1\r"
)


def messages(entry) -> list[str]:
    text = decode(entry.path.read_bytes(), "utf-8").text
    if looks_like_batch(text):
        try:
            return list(split_batch(text).messages)
        except HL7Error:
            pass
    return [text]


def where(report) -> list[tuple[str, int, str]]:
    return [(f.location, f.code, f.severity) for f in report.findings]


def test_a_valid_message_has_no_findings():
    """A message that fits ADT_A01 of 2.5.1 with well-formed values gives no findings and passes."""
    report = validate(ADT)
    assert (report.version, report.structure, report.findings) == ("2.5.1", "ADT_A01", ())
    assert not report.failed


def test_required_field_type_and_table_findings_name_their_location():
    """Missing PID-3 is 101, a bad DTM in PID-7.1 is 102 (errors); an unknown PID-8 code is 103 (warning)."""
    text = ADT.replace("P1^^^PMS^MR", "").replace("19800101|M", "1980-01-01|Q")
    assert where(validate(text)) == [("PID-3", 101, "E"), ("PID-7.1", 102, "E"), ("PID-8", 103, "W")]


def test_finding_texts_never_quote_the_message_values():
    """A value (patient data) that breaks a rule is named by location and rule only."""
    report = validate(ADT.replace("19800101|M", "SECRET-DOB|SECRETSEX"))
    assert report.findings and not any("SECRET" in f.text or "SECRET" in f.location for f in report.findings)


def test_structure_findings_missing_segment_out_of_place_and_z_segments():
    """Missing PV1 is 100 at PV1; a segment past the structure's end is out of place; Z segments fit."""
    without_pv1 = ADT.replace("PV1|1|I\r", "ZPI|1|x\r")
    assert where(validate(without_pv1)) == [("PV1", 100, "E")]
    misplaced = ADT + "EVN|A01|20260101120000\r"
    assert where(validate(misplaced)) == [("EVN[2]", 100, "E")]


def test_repetitions_beyond_the_cardinality_and_components_beyond_the_type():
    """PID-8 repeated (max 1) is 102 at PID-8; a 10th component of XPN in 2.3 is a warning at PID-5.10."""
    assert where(validate(ADT.replace("|M\r", "|M~F\r"))) == [("PID-8", 102, "E")]
    text = ADT.replace("|2.5.1\r", "|2.3\r").replace("DOE^JOHN", "DOE^JOHN^^^^^^^^X")
    assert ("PID-5.10", 102, "W") in where(validate(text))


def test_a_choice_of_segments_is_satisfied_by_one_of_them():
    """ORM_O01 of 2.3 takes OBR (one of OBR, RQD, RQ1, RXO, ODS, ODT): no structure finding."""
    assert [f for f in validate(ORM).findings if f.code == 100] == []


def test_an_unreadable_header_is_one_finding_not_an_exception():
    """Text without an MSH gives one 100 finding at MSH and fails."""
    report = validate("PID|1||X\r")
    assert where(report) == [("MSH", 100, "E")] and report.failed


def test_version_override():
    """validate(version=...) checks against that version, not MSH-12's (2.3's XPN has no 10th component)."""
    text = ADT.replace("DOE^JOHN", "DOE^JOHN^^^^^^^^X")
    assert ("PID-5.10", 102, "W") not in where(validate(text))
    assert ("PID-5.10", 102, "W") in where(validate(text, version="2.3"))


def test_ack_error_carries_the_err_2_parts():
    """A finding becomes an AckError whose location is segment, sequence, field, repetition, component."""
    finding = Finding("OBX", 2, 5, 2, 1, code=102, text="not a valid NM value")
    error = finding.ack_error()
    assert (finding.location, error.location, error.code) == ("OBX[2]-5[2].1", ("OBX", 2, 5, 2, 1), 102)
    assert error.text == "OBX[2]-5[2].1: not a valid NM value"


def test_structures_are_read_once_per_version():
    """A second validation of the same version and structure reads no structure again (cached)."""
    validate(ADT)
    before = structure_of.cache_info()
    validate(ADT.replace("C1", "C9"))
    after = structure_of.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 1)


@pytest.mark.parametrize("entry", corpus_entries(), ids=lambda e: e.file)
def test_every_corpus_message_gives_findings_or_none_never_an_exception(entry):
    """Property: each corpus message and 20 seeded mutations of it validate to well-formed findings."""
    rng = random.Random(entry.file)
    for text in messages(entry):
        variants = [text]
        for _ in range(20):
            cut = rng.randrange(len(text) + 1)
            choice = rng.random()
            if choice < 0.4:
                variants.append(text[:cut])  # truncated
            elif choice < 0.8:
                # a delimiter, a segment end or a control character inserted
                variants.append(text[:cut] + rng.choice('|^~\\&\r\x0b"') + text[cut:])
            else:
                segments = text.split("\r")
                rng.shuffle(segments)
                variants.append("\r".join(segments))  # segments out of order
        for variant in variants:
            report = validate(variant)
            for finding in report.findings:
                assert finding.code in ERROR_TEXTS and finding.severity in ("E", "W"), finding
                if finding.field:
                    assert parse_path(finding.location).field == finding.field, finding
            assert report.failed == any(f.severity == "E" for f in report.findings)


def test_the_manifest_rejects_fail_validation():
    """Every corpus message the intake must reject (expect AR) also fails validation."""
    for entry in corpus_entries():
        if entry.expect == "AR":
            assert all(validate(text).failed for text in messages(entry)), entry.file


def test_where_hl7apy_passes_a_corpus_message_ours_finds_only_what_hl7apy_does_not_check():
    """Differential: on each corpus message hl7apy's own Validator passes, our errors are of kinds it skips.

    hl7apy checks children, cardinality and data type names, not segment order nor the form of a
    value (NM, DTM): an error of ours beyond those two kinds would be a disagreement on the standard.
    """
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator

    compared, disagreements = 0, []
    for entry in corpus_entries():
        for text in messages(entry):
            try:
                parsed = parse_message(
                    text.replace("\n", "\r"), find_groups=True, validation_level=VALIDATION_LEVEL.TOLERANT
                )
                Validator.validate(parsed)
            except Exception:  # hl7apy refuses most of the corpus: nothing to compare
                continue
            compared += 1
            for finding in validate(text).findings:
                skipped_by_hl7apy = (finding.code == 100 and "out of place" in finding.text) or (
                    finding.code == 102 and finding.text.startswith("not a valid")
                )
                if finding.severity == "E" and not skipped_by_hl7apy:
                    disagreements.append((entry.file, finding.location, finding.code, finding.text))
    assert disagreements == []
    assert compared >= 30
