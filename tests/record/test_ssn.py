"""PID-19 (SSN) and PID-3 identifiers of type SS: kept sealed, they corroborate or contradict a link.

An SSN the identity rule's candidate shares links the two (strict rule, nothing else shared); a
different one makes a possible duplicate even with a phone in common; a cross-reference or an A24
between patients whose SSNs differ links nothing. The FHIR Patient lists it with system us-ssn.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.record import schema
from engine.record.fhir import everything
from engine.record.identity import IdentityRule
from engine.record.ingest import RecordIngestor
from engine.record.operations import RecordOperator
from engine.record.query import get_patient
from engine.store.cipher import TEXT_PREFIX, Cipher
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from tests.fakes.record import NOW, Feeder, hl7
from tests.record.test_fhir import BASE, validate

ANNA = "SMITH^ANNA||19800517|F"


def pid(identifier: str, ssn: str = "", phone: str = "") -> str:
    """A PID of Anna Smith with PID-3 ``identifier``, PID-13 ``phone`` and PID-19 ``ssn``."""
    return f"PID|1||{identifier}||{ANNA}|||||{phone}||||||{ssn}"


def kinds(engine) -> list[str]:
    """The kinds of the open worklist, sorted."""
    return sorted(item["kind"] for item in RecordOperator(engine).worklist())


def active(engine) -> int:
    """How many patients are not merged away."""
    p = schema.patients.c
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).where(p.merged_into_id.is_(None))).scalar()


def test_the_ssn_is_kept_shown_and_exported_as_us_ssn(feed):
    """PID-19 is the patient's ssn; $everything lists it as an identifier of system us-ssn, valid R4B."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789")))
    assert get_patient(feed.engine, 1)["ssn"] == "123-45-6789"
    bundle = everything(feed.engine, 1, base_url=BASE)
    validate(bundle)
    patient = bundle["entry"][0]["resource"]
    ssn = [i for i in patient["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-ssn"]
    assert [(i["use"], i["type"]["coding"][0]["code"], i["value"]) for i in ssn] == [
        ("official", "SS", "123-45-6789")
    ]


def test_a_shared_ssn_corroborates_the_identity_rule(feed):
    """Look-alikes from two systems sharing only PID-19 (written differently) are linked, by SSN."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789")))
    _, result = feed(
        hl7("ADT^A04^ADT_A01", "20240102080000", pid("E-1^^^EMR^MR", ssn="123456789"), sender="EMR")
    )
    assert "linked (rule)" in result.detail
    assert active(feed.engine) == 1
    m = schema.merges.c
    with feed.engine.connect() as connection:
        assert (
            connection.execute(sa.select(m.reason))
            .scalar()
            .startswith("identity rule family+given+birth_date+sex matched patient 1, corroborated by SSN")
        )
    assert kinds(feed.engine) == []


def test_a_pid_3_ssn_corroborates_a_stored_pid_19(feed):
    """From v2.7 the SSN is a PID-3 repetition of type SS: it corroborates the PID-19 the record holds."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789")))
    other = "E-1^^^EMR^MR~123456789^^^SSA^SS"
    _, result = feed(hl7("ADT^A04^ADT_A01", "20240102080000", pid(other), sender="EMR"))
    assert "linked (rule)" in result.detail


def test_a_different_ssn_is_a_possible_duplicate_even_with_a_shared_phone(engine):
    """Strict or not, a rule match whose SSNs differ is a new patient and a possible duplicate, not a link."""
    for rule in (IdentityRule(), IdentityRule(strict=False)):
        with engine.begin() as connection:
            for table in reversed(schema.metadata.sorted_tables):
                if table.name.startswith("record_") or table.name == "messages":
                    connection.execute(table.delete())
        feed = Feeder(engine, RecordIngestor(engine, identity_rule=rule, clock=lambda: NOW))
        feed(
            hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789", phone="555-0100"))
        )
        second = pid("E-1^^^EMR^MR", ssn="987-65-4321", phone="555-0100")
        _, result = feed(hl7("ADT^A04^ADT_A01", "20240102080000", second, sender="EMR"))
        assert "linked" not in result.detail
        assert active(engine) == 2
        worklist = RecordOperator(engine).worklist()
        assert [(item["kind"], "SSN differs" in item["detail"]) for item in worklist] == [
            ("possible_duplicate", True)
        ]


def test_a_cross_reference_or_a24_between_different_ssns_links_nothing(feed):
    """A PID listing identifiers of two patients whose SSNs differ, or an A24 of them, is a conflict."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789")))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", pid("E-1^^^EMR^MR", ssn="987-65-4321"), sender="EMR"))
    _, crossed = feed(hl7("ADT^A08^ADT_A01", "20240102080000", pid("P-1^^^PMS^MR~E-1^^^EMR^MR")))
    assert "linked" not in crossed.detail
    a24 = hl7("ADT^A24^ADT_A24", "20240102090000", pid("P-1^^^PMS^MR"), pid("E-1^^^EMR^MR"))
    _, linked = feed(a24)
    assert "linked" not in linked.detail
    assert active(feed.engine) == 2
    assert kinds(feed.engine) == ["identifiers_disagree", "link_contradicted", "possible_duplicate"]


def test_the_ssn_is_stored_sealed(tmp_path):
    """With encryption at rest the ssn column holds no clear text, and the record shows it opened."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'r.db'}", cipher=Cipher({"k": b"k" * 32}, "k"))
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", pid("P-1^^^PMS^MR", ssn="123-45-6789")))
    with engine.connect() as connection:
        stored = connection.execute(sa.select(schema.patients.c.ssn)).scalar()
    assert stored.startswith(TEXT_PREFIX) and "6789" not in stored
    assert get_patient(engine, 1)["ssn"] == "123-45-6789"
    engine.dispose()
