"""engine/record/apply/common.py: what every family shares: the PID's patient, its identity and lists."""

from __future__ import annotations

from engine.hl7.charset import decode
from engine.hl7.message import Message
from engine.record import schema
from engine.record.identity import IdentityRule
from engine.record.ingest import RecordIngestor
from engine.record.query import get_patient
from engine.record.writer import Writer
from tests.fakes.record import NOW, PID, RECEIVED, Feeder, history, hl7, store_message


def test_hl7_null_clears_and_empty_keeps(feed):
    """PID-8 ``""`` clears the sex; an absent PID-11 keeps the address."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(hl7("ADT^A08^ADT_A01", "20240102080000", 'PID|1||P-1^^^PMS^PI||DOE^JANE^Q||19700101|""'))
    patient = get_patient(feed.engine, 1)
    assert patient["sex"] is None
    assert [a["line1"] for a in patient["addresses"]] == ["1 Main St"]


def _lists_read(monkeypatch) -> list[str]:
    """The tables of the patient's lists that the writer reads from now on (appended as they are read)."""
    read = []
    rows = Writer.rows

    def spy(self, table, *keys, **options):
        if table.name in ("record_names", "record_addresses", "record_telecoms", "record_contacts"):
            read.append(table.name)
        return rows(self, table, *keys, **options)

    monkeypatch.setattr(Writer, "rows", spy)
    return read


def _list_history(engine) -> list[tuple]:
    return history(engine, "record_patients", "field", "message_id")


NK1 = "NK1|1|DOE^JOHN|SPO^Spouse^HL70063||^PRN^PH^^1^555^1234567"


def test_lists_sent_as_stored_are_not_read_and_one_changed_field_is_applied(feed, engine, monkeypatch):
    """A PID and NK1 sent again as stored leave lists unread; a changed address replaces addresses alone."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID, NK1))
    read = _lists_read(monkeypatch)
    feed(hl7("ADT^A08^ADT_A01", "20240102080000", PID, NK1))
    assert read == []
    moved, _ = feed(hl7("ADT^A08^ADT_A01", "20240103080000", PID.replace("^Town^", "^City^"), NK1))
    assert read == ["record_addresses"]
    patient = get_patient(engine, 1)
    assert (
        [a["city"] for a in patient["addresses"]],
        [n["family"] for n in patient["names"]],
        [c["family"] for c in patient["contacts"]],
    ) == (["City"], ["DOE"], ["DOE"])
    assert _list_history(engine) == [("addresses", moved)]
    feed(
        hl7(
            "ADT^A08^ADT_A01",
            "20240104080000",
            PID.replace("^Town^", "^City^"),
            NK1.replace("DOE^JOHN", "ROE^JOHN"),
        )
    )
    assert read == ["record_addresses", "record_contacts"]
    assert [c["family"] for c in get_patient(engine, 1)["contacts"]] == ["ROE"]


def test_a_patient_without_list_digests_compares_its_lists_as_before(feed, engine, monkeypatch):
    """A patient from before 0008 (no digests) has its lists compared once, then known; a new name applies."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    with engine.begin() as connection:
        connection.execute(schema.patients.update().values(list_digests=None))
    read = _lists_read(monkeypatch)
    _, renamed = feed(hl7("ADT^A08^ADT_A01", "20240102080000", PID.replace("DOE^JANE", "DOE^JANET")))
    assert read == ["record_names", "record_addresses"]
    feed(hl7("ADT^A08^ADT_A01", "20240103080000", PID.replace("DOE^JANE", "DOE^JANET")))
    assert read == ["record_names", "record_addresses"]
    assert [n["given"] for n in get_patient(engine, 1)["names"]] == ["JANET"]
    assert _list_history(engine) == [("names", renamed.message_id)]


def test_undecodable_bytes_are_stored_replaced(engine, ingestor):
    """Latin-1 bytes read as UTF-8 (lone surrogates) are stored replaced; the id still matches next time."""
    raw = hl7(
        "ADT^A04^ADT_A01", "20240101080000", "PID|1||P-\xe9^^^PMS^PI||M\xfcLLER^J\xd6RG||19700101|M"
    ).encode("latin-1")
    results = [
        ingestor.apply(store_message(engine, raw), Message.parse(decode(raw).text), RECEIVED)
        for _ in range(2)
    ]
    assert [r.patient_id for r in results] == [1, 1]
    patient = get_patient(engine, 1)
    assert [(i["value"], n["family"]) for i, n in zip(patient["identifiers"], patient["names"])] == [
        ("P-?", "M?LLER")
    ]


def test_identifiers_of_two_patients_are_flagged_not_merged(feed):
    """A PID joining identifiers of two patients applies to the first one known and flags the other."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(
        hl7("ADT^A04^ADT_A01", "20240101090000", "PID|1||E-9^^^EMR^MR||ROE^RICHARD||19600202|M", sender="EMR")
    )
    _, result = feed(
        hl7(
            "ADT^A08^ADT_A01",
            "20240102080000",
            "PID|1||P-1^^^PMS^PI~E-9^^^EMR^MR||DOE^JANE^Q||19700101|F",
            sender="EMR",
        )
    )
    assert (result.patient_id, result.detail) == (
        1,
        "patient 1; identity conflict flagged (identifiers_disagree)",
    )
    (conflict,) = get_patient(feed.engine, 1)["conflicts"]
    assert (
        conflict["kind"],
        conflict["patient_id"],
        conflict["other_patient_id"],
        conflict["authority"],
        conflict["value"],
        conflict["resolved_at"],
    ) == ("identifiers_disagree", 1, 2, "EMR", "E-9", None)
    assert [i["value"] for i in get_patient(feed.engine, 2)["identifiers"]] == ["E-9"]
    assert get_patient(feed.engine, 2)["merged_into"] is None


def test_identity_rule_alone_makes_a_possible_duplicate(feed):
    """Same name, birth date and sex from the lab, nothing corroborating: a new patient, flagged."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, result = feed(
        hl7("ORU^R01^ORU_R01", "20240102080000", "PID|1||L-5^^^LAB^PI||Doe^Jane||19700101|f", sender="LAB")
    )
    assert result.patient_id == 2
    [conflict] = get_patient(feed.engine, 2)["conflicts"]
    assert (conflict["kind"], conflict["patient_id"], conflict["other_patient_id"]) == (
        "possible_duplicate",
        2,
        1,
    )
    assert "nothing to corroborate it" in conflict["detail"]


def test_identity_rule_links_a_corroborated_new_authority(feed):
    """Same name, birth date, sex and address from the lab: linked by a merge of kind rule, with why."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, result = feed(
        hl7(
            "ORU^R01^ORU_R01",
            "20240102080000",
            "PID|1||L-5^^^LAB^PI||Doe^Jane||19700101|f|||1 MAIN ST.^^Town^ST^11111",
            sender="LAB",
        )
    )
    assert result.patient_id == 1
    patient = get_patient(feed.engine, 1)
    assert [(i["authority"], i["value"], i["alias"]) for i in patient["identifiers"]] == [
        ("PMS", "P-1", False),
        ("LAB", "L-5", True),
    ]
    [merge] = patient["merges"]
    assert (merge["kind"], merge["prior_id"], merge["reason"]) == (
        "rule",
        2,
        "identity rule family+given+birth_date+sex matched patient 1, corroborated by address (message 2)",
    )


def test_identity_rule_can_be_narrowed_or_disabled(engine):
    """Without a rule the lab id is a new patient; a demographic family and birth date rule links anyway."""
    feeds = {
        "none": Feeder(engine, RecordIngestor(engine, identity_rule=None, clock=lambda: NOW)),
        "narrow": Feeder(
            engine,
            RecordIngestor(
                engine, identity_rule=IdentityRule(("family", "birth_date"), strict=False), clock=lambda: NOW
            ),
        ),
    }
    feeds["none"](hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    _, linked = feeds["narrow"](
        hl7("ORU^R01", "20240102080000", "PID|1||L-6^^^LAB^PI||DOE^JOAN||19700101|F", sender="LAB")
    )
    _, unlinked = feeds["none"](
        hl7("ORU^R01", "20240102080000", "PID|1||L-5^^^LAB^PI||DOE^JANE||19700101|F", sender="LAB")
    )
    assert (linked.patient_id, unlinked.patient_id) == (1, 3)  # 2: the linked one, merged into 1


def test_rule_matching_several_patients_creates_and_flags(feed):
    """Two patients alike: a third registration from another system matches both, so it is new and flagged."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", PID))
    feed(
        hl7(
            "ADT^A04^ADT_A01",
            "20240101090000",
            PID.replace("P-1^^^PMS", "P-2^^^PMS2").replace("19700101", "19700102"),
        )
    )
    feed(hl7("ADT^A08^ADT_A01", "20240101093000", PID.replace("P-1^^^PMS", "P-2^^^PMS2")))
    _, result = feed(
        hl7("ADT^A04^ADT_A01", "20240101100000", PID.replace("P-1^^^PMS", "E-1^^^EMR"), sender="EMR")
    )
    assert result.patient_id == 3
    kinds = [
        (c["kind"], c["patient_id"], c["other_patient_id"]) for c in get_patient(feed.engine, 3)["conflicts"]
    ]
    assert kinds == [("rule_ambiguous", 3, 1), ("rule_ambiguous", 3, 2)]


def test_an_older_message_writes_the_fields_no_newer_message_sent(feed):
    """Last writer by message time, field by field: an older PID sets the phone no newer one sent.

    Its sex and address, sent by a newer message too, stay as the newer one left them.
    """
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F|||1 Main St"))
    feed(hl7("ADT^A08^ADT_A01", "20240103080000", "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F|||2 New Rd"))
    older = "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|M|||3 Old Ln||555-0100"
    _, result = feed(hl7("ADT^A08^ADT_A01", "20240102080000", older))
    assert "only fields no newer message sent applied" in result.detail
    patient = get_patient(feed.engine, 1)
    assert patient["sex"] == "F"
    assert [a["line1"] for a in patient["addresses"]] == ["2 New Rd"]
    assert [t["value"] for t in patient["telecoms"]] == ["555-0100"]
    assert patient["as_of"] == "2024-01-03T08:00:00+00:00"
    _, again = feed(hl7("ADT^A08^ADT_A01", "20240102070000", older))
    assert "demographics kept" in again.detail


def test_a_person_shows_the_newest_demographics_of_the_patients_linked_into_it(feed):
    """After a link the survivor shows the prior's address no message sent it; unlinked, its own again."""
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F|||1 Main St"))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", "PID|1||E-1^^^EMR^MR||DOE^JANE||19700101|F", sender="EMR"))
    _, linked = feed(
        hl7("ADT^A08^ADT_A01", "20240101100000", "PID|1||E-1^^^EMR^MR~P-1^^^PMS^PI", sender="EMR")
    )
    assert "linked (cross_reference)" in linked.detail
    survivor = get_patient(feed.engine, 2)
    assert [a["line1"] for a in survivor["addresses"]] == ["1 Main St"]
    feed(hl7("ADT^A08^ADT_A01", "20240101110000", "PID|1||E-1^^^EMR^MR||||||||2 New Rd", sender="EMR"))
    assert [a["line1"] for a in get_patient(feed.engine, 2)["addresses"]] == ["2 New Rd"]
    feed(hl7("ADT^A37^ADT_A37", "20240101120000", "PID|1||E-1^^^EMR^MR", "PID|1||P-1^^^PMS^PI", sender="EMR"))
    assert [a["line1"] for a in get_patient(feed.engine, 1)["addresses"]] == ["1 Main St"]
