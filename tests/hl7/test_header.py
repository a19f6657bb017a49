"""The cheap MSH reader, header validation, the event map, and the corpus expectations."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import HL7Error
from engine.hl7.batch import looks_like_batch, split_batch
from engine.hl7.charset import decode
from engine.hl7.header import (
    KNOWN_VERSIONS,
    Header,
    HeaderProblem,
    is_ack,
    patient_id,
    read_header,
    structure_for,
    validate_header,
)
from engine.hl7.message import Delimiters, Message
from tests.fakes.corpus import corpus_entries

FULL = (
    "MSH|^~\\&|PMS^1.2.3^ISO|NORTH|EMR|SOUTH|20260101120000||ADT^A04^ADT_A01|MSG1|P^T|2.5.1^US&&ISO|||AL|NE|USA|"
    "UNICODE UTF-8~8859/1|EN\rPID|1||123"
)


def header(**fields: str) -> Header:
    """A valid v2.5.1 ADT^A01 header with the given MSH fields replaced (``f9='ORU^R01'``)."""
    values = [
        "MSH",
        "|",
        "^~\\&",
        "APP",
        "FAC",
        "RAPP",
        "RFAC",
        "20260101",
        "",
        "ADT^A01",
        "42",
        "P",
        "2.5.1",
    ]
    for name, value in fields.items():
        n = int(name[1:])
        values.extend([""] * (n + 1 - len(values)))
        values[n] = value
    return read_header("MSH|" + "|".join(values[2:]))


def test_read_header_exposes_the_msh_fields():
    """Every property reads the MSH field docs/hl7.md §4 names, with the off-by-one rule applied."""
    h = read_header(FULL)
    assert h.delimiters == Delimiters.DEFAULT
    assert h.fields[:4] == ("MSH", "|", "^~\\&", "PMS^1.2.3^ISO")
    assert h.field(9) == "ADT^A04^ADT_A01"
    assert (h.sending_application, h.sending_facility) == ("PMS^1.2.3^ISO", "NORTH")
    assert (h.receiving_application, h.receiving_facility) == ("EMR", "SOUTH")
    assert (h.message_code, h.trigger_event, h.message_structure) == ("ADT", "A04", "ADT_A01")
    assert (h.control_id, h.processing_id, h.version) == ("MSG1", "P", "2.5.1")
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert h.charset == "UNICODE UTF-8"
    assert h.message_type == "ADT^A04"
    assert (h.field(19), h.field(20), h.field(-1)) == ("EN", "", "")


def test_read_header_reads_only_the_first_segment():
    """Fields end at the first CR or LF; later segments are not looked at."""
    for ending in ("\r", "\n", "\r\n"):
        h = read_header(f"MSH|^~\\&|A|B|C|D|2026||ORU^R01|7|P|2.4{ending}PID|1|2|3|4|5|6|7|8")
        assert h.fields[-1] == "2.4"
        assert h.field(13) == ""


def test_read_header_uses_the_message_delimiters():
    """Non-default separators (field '^', component '~', repetition '|') are honoured."""
    h = read_header("MSH^~|\\&^APP^FAC^^^2026^^ADT~A24^1^P^2.4\rPID^1")
    assert (h.message_code, h.trigger_event, h.message_type, h.sending_application) == (
        "ADT",
        "A24",
        "ADT^A24",
        "APP",
    )


@pytest.mark.parametrize("prefix", ["\r\n", "\n\n", "  ", "\x0b", "\r\n\x0b \t"])
def test_read_header_skips_leading_whitespace(prefix):
    """CR, LF, spaces and a stray MLLP start byte before MSH are tolerated."""
    assert read_header(prefix + FULL).control_id == "MSG1"


@pytest.mark.parametrize(
    "text", ["", "   ", "PID|1", "MSH", "MSH\rPID|1", "[SOM]MSH|^~\\&|A", "\x00MSH|^~\\&|A", "msh|^~\\&|A"]
)
def test_read_header_without_msh_raises_100(text):
    """Text that does not start with MSH and a separator gives HL7Error 100 at MSH."""
    with pytest.raises(HL7Error) as raised:
        read_header(text)
    assert (raised.value.code, raised.value.location) == (100, ("MSH",))
    assert str(raised.value) == "no MSH segment at the start of the message"


@pytest.mark.parametrize(
    "text",
    [
        "MSH|",
        "MSH||A|B",
        "MSH|^~\\\\\\&|A",
        "MSH|^\\\\~&|A",
        "MSH|^~\\\\&#|A",
        "MSHH0",
        "MSH|^&&^|A",
        "MSH|^~\\&#$|A",
    ],
)
def test_read_header_with_bad_delimiters_raises_102(text):
    """Unusable MSH-1/MSH-2 give HL7Error 102 at MSH-2."""
    with pytest.raises(HL7Error) as raised:
        read_header(text)
    assert (raised.value.code, raised.value.location) == (102, ("MSH", 1, 2))


def test_read_header_reads_a_doubled_backslash_as_one_escape_character():
    """MSH-2 '^~\\\\&' (a doubled escape character) gives the delimiters '^~\\&'; MSH-2 is kept as sent."""
    h = read_header("MSH|^~\\\\&|APP|FAC|||2026||ADT^A01|7|P|2.5\rPID|1")
    assert h.delimiters == Delimiters.DEFAULT
    assert h.fields[:4] == ("MSH", "|", "^~\\\\&", "APP")
    assert (h.message_type, h.control_id, h.version) == ("ADT^A01", "7", "2.5")
    assert validate_header(h) == []


def test_read_header_does_not_validate():
    """A header with no MSH-9 or MSH-10 is still read; validation is separate."""
    h = read_header("MSH|^~\\&")
    assert (h.message_code, h.control_id, h.message_type, h.message_structure) == ("", "", "", "")


def test_components_come_from_the_first_repetition():
    """MSH-9/11/12 components are read from their first repetition only."""
    h = header(f9="ORU^R01~ADT^A01", f11="T~P", f12="2.3.1^AUS&&ISO~2.5")
    assert (h.message_type, h.processing_id, h.version) == ("ORU^R01", "T", "2.3.1")


def test_message_type_without_trigger_is_the_code():
    """MSH-9 'ORU' or 'ACK^' gives message_type 'ORU' / 'ACK'."""
    assert header(f9="ORU").message_type == "ORU"
    assert header(f9="ACK^").message_type == "ACK"


def test_message_structure_is_derived_when_absent():
    """Without MSH-9.3 the event map gives the structure for the message's version."""
    assert header(f9="ADT^A04").message_structure == "ADT_A01"
    assert header(f9="ADT^A04^ADT_A04").message_structure == "ADT_A04"
    assert header(f9="ADT^A12", f12="2.4").message_structure == "ADT_A09"
    assert header(f9="ADT^A12", f12="2.5").message_structure == "ADT_A12"


HEADERISH = st.builds(
    lambda head, body: head + body,
    st.sampled_from(
        ["", "MSH|^~\\&|", "MSH|^~\\&#|", "MSH|^~\\|", "MSH|^~\\\\&|", "MSH^~|\\&^", "MSH|", "\r\nMSH|^~\\&|"]
    ),
    st.text(alphabet=st.sampled_from(list("|^~\\&#\r\nADT01A2.5PTNK \u00e9")), max_size=120),
)
PROPERTIES = [
    "sending_application", "sending_facility", "receiving_application", "receiving_facility", "message_code",
    "trigger_event", "message_structure", "control_id", "processing_id", "version", "accept_ack_type",
    "application_ack_type", "charset", "message_type",
]  # fmt: skip


@given(st.one_of(st.text(max_size=200), HEADERISH))
def test_read_and_validate_raise_only_hl7error(text):
    """Any text gives a Header or HL7Error 100/102; validation and every property then work."""
    try:
        h = read_header(text)
    except HL7Error as error:
        assert error.code in (100, 102)
        return
    assert {p.code for p in validate_header(h)} <= {101, 200, 201, 203}
    assert all(isinstance(getattr(h, name), str) for name in PROPERTIES)
    assert is_ack(h) in (True, False)


@given(HEADERISH)
def test_read_header_agrees_with_message_parse(text):
    """The hot-path reader and the full parser see the same MSH fields, or fail with the same code."""
    try:
        h = read_header(text)
    except HL7Error as error:
        with pytest.raises(HL7Error) as raised:
            Message.parse(text.lstrip())
        assert raised.value.code == error.code
        return
    message = Message.parse(text.lstrip())
    assert message.delimiters == h.delimiters
    assert tuple(message.segments[0].fields) == h.fields


# --- validate_header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"f11": ""},
        {"f12": ""},
        {"f11": "", "f12": ""},
        {"f11": "D"},
        {"f11": "T^A"},
        {"f9": "ORU"},
        {"f9": "ACK^"},
        {"f9": "ZZ1^Z99^ZZ1_Z99"},
        {"f12": "2.3.1^AUS&&ISO^AS4700.2&&L"},
        {"f7": "", "f3": "", "f18": "EBCDIC"},
    ]
    + [{"f12": version} for version in KNOWN_VERSIONS],
)
def test_acceptable_headers_have_no_problems(fields):
    """Empty MSH-11/12, a missing trigger, known versions and unvalidated fields are accepted."""
    assert validate_header(header(**fields)) == []


@pytest.mark.parametrize("processing_id", ["P", "T", "D", "N", "PT", "X", "P^A", "é"])
def test_processing_id_is_not_validated(processing_id):
    """validate_header never checks MSH-11 (no 202): accepting processing ids is the listener's setting."""
    h = header(f11=processing_id)
    assert h.processing_id == processing_id.split("^")[0]
    assert validate_header(h) == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"f9": ""}, HeaderProblem(101, ("MSH", 1, 9), "MSH-9 message type missing")),
        ({"f9": "^A01"}, HeaderProblem(101, ("MSH", 1, 9), "MSH-9 message type missing")),
        ({"f10": ""}, HeaderProblem(101, ("MSH", 1, 10), "MSH-10 message control id missing")),
        ({"f9": "AD^A01"}, HeaderProblem(200, ("MSH", 1, 9, 1, 1), "unsupported message type 'AD'")),
        ({"f9": "ADT*^A01"}, HeaderProblem(200, ("MSH", 1, 9, 1, 1), "unsupported message type 'ADT*'")),
        ({"f9": "ADÉ^A01"}, HeaderProblem(200, ("MSH", 1, 9, 1, 1), "unsupported message type 'ADÉ'")),
        ({"f9": "ADT^A03*"}, HeaderProblem(201, ("MSH", 1, 9, 1, 2), "unsupported event code 'A03*'")),
        ({"f9": "ADT^A1"}, HeaderProblem(201, ("MSH", 1, 9, 1, 2), "unsupported event code 'A1'")),
        ({"f12": "2.6.1"}, HeaderProblem(203, ("MSH", 1, 12, 1, 1), "unsupported version id '2.6.1'")),
        ({"f12": "3.0"}, HeaderProblem(203, ("MSH", 1, 12, 1, 1), "unsupported version id '3.0'")),
        ({"f12": "2.5 "}, HeaderProblem(203, ("MSH", 1, 12, 1, 1), "unsupported version id '2.5 '")),
    ],
)
def test_each_rule_reports_its_problem(fields, problem):
    """Each header rule gives its table 0357 code, ERR-2 location and text."""
    assert validate_header(header(**fields)) == [problem]


def test_every_problem_is_reported_in_field_order():
    """All problems are listed at once, ordered by field; an odd MSH-11 adds none."""
    problems = validate_header(header(f9="", f10="", f11="X", f12="9.9"))
    assert [(p.code, p.location[2]) for p in problems] == [(101, 9), (101, 10), (203, 12)]


def test_is_ack():
    """ACK in MSH-9.1 or MSH-9.3 marks an acknowledgement."""
    assert is_ack(header(f9="ACK"))
    assert is_ack(header(f9="ACK^A01^ACK"))
    assert is_ack(header(f9="MCF^^ACK"))
    assert not is_ack(header(f9="ADT^A01^ADT_A01"))


# --- structure_for --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "trigger", "version", "structure"),
    [
        ("ACK", "", "2.5", "ACK"),
        ("ACK", "A01", "2.3", "ACK"),
        ("ADT", "", "2.5", ""),
        ("", "A01", "2.5", ""),
        ("ADT", "A01", "2.5", "ADT_A01"),
        ("ADT", "A04", "2.5", "ADT_A01"),
        ("ADT", "A08", "2.8", "ADT_A01"),
        ("ADT", "A13", "2.4", "ADT_A01"),
        ("ADT", "A28", "2.5.1", "ADT_A05"),
        ("ADT", "A31", "2.7", "ADT_A05"),
        ("ADT", "A11", "2.6", "ADT_A09"),
        ("ADT", "A40", "2.5", "ADT_A39"),
        ("ADT", "A34", "2.6", "ADT_A30"),
        ("ADT", "A34", "2.7", "ADT_A34"),
        ("ADT", "A12", "2.4", "ADT_A09"),
        ("ADT", "A12", "2.5", "ADT_A12"),
        ("ADT", "A55", "2.5", "ADT_A52"),
        ("ADT", "A55", "2.6", "ADT_A54"),
        ("ADT", "A47", "2.6", "ADT_A30"),
        ("ADT", "A47", "2.8", "ADT_A44"),
        ("ADT", "A04", "2.2", "ADT_A04"),
        ("ADT", "A04", "2.3", "ADT_A01"),
        ("ADT", "A28", "2.3.1", "ADT_A28"),
        ("SIU", "S14", "2.3", "SIU_S12"),
        ("SIU", "S26", "2.5.1", "SIU_S12"),
        ("SIU", "S27", "2.6", "SIU_S27"),
        ("SIU", "S27", "2.7", "SIU_S12"),
        ("MDM", "T04", "2.5", "MDM_T02"),
        ("ORU", "R01", "2.5", "ORU_R01"),
        ("ORU", "R31", "2.4", "ORU_R31"),
        ("ORU", "R31", "2.5", "ORU_R30"),
        ("ORU", "R40", "2.8", "ORU_R01"),
        ("DFT", "P11", "2.5", "DFT_P11"),
        ("VXU", "V04", "2.5.1", "VXU_V04"),
        ("BAR", "P12", "2.5", "BAR_P12"),
        ("ORM", "O01", "2.3", "ORM_O01"),
        ("RQI", "A04", "2.3", "RQI_A04"),
        ("ADT", "A04", "", "ADT_A01"),
        ("ADT", "A04", "2.6.1", "ADT_A01"),
    ],
)
def test_structure_for(code, trigger, version, structure):
    """ACK -> ACK; the version's event map (newest when unknown); else CODE_TRIGGER; '' without trigger."""
    assert structure_for(code, trigger, version) == structure


HL7APY_VERSIONS = ["2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"]


def hl7apy_module(version: str, name: str):
    """hl7apy's per-version module (``messages`` or ``tables``), or None when it ships none."""
    try:
        return importlib.import_module(f"hl7apy.v{version.replace('.', '_')}.{name}")
    except ModuleNotFoundError:
        return None


@pytest.mark.parametrize("version", HL7APY_VERSIONS)
def test_event_map_targets_exist_in_hl7apy(version):
    """Wherever the event map gives a shared structure, hl7apy defines that structure for the version."""
    structures = hl7apy_module(version, "messages").MESSAGES
    shared = {
        (f"{code}_{event}", structure_for(code, event, version))
        for code, family in FAMILY_EVENTS.items()
        for event in family
        if structure_for(code, event, version) != f"{code}_{event}"
    }
    assert sorted((event, target) for event, target in shared if target not in structures) == []
    if version not in ("2.1", "2.2"):
        assert ("ADT_A04", "ADT_A01") in shared


# Events hl7apy lists in table 0003 that were withdrawn in 2.7, so no structure carries them.
WITHDRAWN_IN_27 = {"ADT_A18", "ADT_A30", "ADT_A34", "ADT_A35", "ADT_A36", "ADT_A46", "ADT_A48", "ORM_O01"}
FAMILY_EVENTS = {
    "ADT": [f"A{n:02d}" for n in range(1, 63) if n != 19],
    "SIU": [f"S{n:02d}" for n in range(12, 28) if n != 25],
    "MDM": [f"T{n:02d}" for n in range(1, 12)],
    "ORU": ["R01", "R30", "R31", "R32", "R40"],
    "ORM": ["O01"],
    "DFT": ["P03", "P11"],
    "VXU": ["V04"],
    "BAR": ["P01", "P02", "P05", "P06", "P10", "P12"],
}


@pytest.mark.parametrize("version", ["2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"])
def test_every_family_event_resolves_to_an_hl7apy_structure(version):
    """For 2.4+, each ADT/SIU/MDM/ORU/ORM/DFT/VXU/BAR event of hl7apy's table 0003 has a structure.

    The structure is one hl7apy defines.
    """
    structures = hl7apy_module(version, "messages").MESSAGES
    events = set(hl7apy_module(version, "tables").TABLES["HL70003"][1])
    withdrawn = WITHDRAWN_IN_27 if KNOWN_VERSIONS.index(version) >= KNOWN_VERSIONS.index("2.7") else set()
    unresolved = [
        f"{code}_{event} -> {structure_for(code, event, version)}"
        for code, family in FAMILY_EVENTS.items()
        for event in family
        if event in events
        and f"{code}_{event}" not in withdrawn
        and structure_for(code, event, version) not in structures
    ]
    assert unresolved == []


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_old_versions_keep_one_structure_per_event(version):
    """Before 2.3 every event hl7apy defines is its own structure, and structure_for agrees."""
    structures = hl7apy_module(version, "messages").MESSAGES
    for name in structures:
        code, _, trigger = name.partition("_")
        if code in FAMILY_EVENTS and len(trigger) == 3:
            assert structure_for(code, trigger, version) == name


# --- the corpus -----------------------------------------------------------------------------


def corpus_outcome(text: str) -> list[int]:
    """Table 0357 codes the intake would answer with for one message text ([] = accepted)."""
    try:
        return [problem.code for problem in validate_header(read_header(text))]
    except HL7Error as error:
        return [error.code]


@pytest.mark.parametrize("entry", [e for e in corpus_entries() if e.expect == "AA"], ids=lambda e: e.file)
def test_corpus_aa_files_have_acceptable_headers(entry):
    """Every AA file is a single message whose header reads and validates without problems."""
    text = decode(entry.path.read_bytes()).text
    assert not looks_like_batch(text)
    assert corpus_outcome(text) == []


@pytest.mark.parametrize("entry", [e for e in corpus_entries() if e.expect == "AR"], ids=lambda e: e.file)
def test_corpus_ar_files_are_rejected(entry):
    """Every AR file fails: the header does not read or validate, or the batch does not split."""
    text = decode(entry.path.read_bytes()).text
    if looks_like_batch(text):
        with pytest.raises(HL7Error):
            split_batch(text)
    else:
        assert corpus_outcome(text) != []


@pytest.mark.parametrize("entry", [e for e in corpus_entries() if e.expect == "any"], ids=lambda e: e.file)
def test_corpus_any_files_get_one_clear_outcome(entry):
    """'any' files are read or rejected with HL7Error (never another exception) and are not batches."""
    text = decode(entry.path.read_bytes()).text
    assert not looks_like_batch(text)
    assert all(100 <= code <= 207 for code in corpus_outcome(text))


def corpus_text(file: str) -> str:
    """The decoded text of one corpus file, named as in the manifest."""
    entry = next(e for e in corpus_entries() if e.file == file)
    return decode(entry.path.read_bytes()).text


@pytest.mark.parametrize("file", ["oru/cdcti_micro_char_008.hl7", "orm/cdcti_011_orm_nte_8859.hl7"])
def test_corpus_processing_id_n_is_accepted(file):
    """The CDC files send MSH-11 'N' and their headers validate without problems."""
    h = read_header(corpus_text(file))
    assert (h.processing_id, validate_header(h)) == ("N", [])


@pytest.mark.parametrize(
    "file",
    ["adt/lfh_sample_unix.hl7", "malformed/lfh_sample_win.hl7", "malformed/nodehl7_literal_backslashes.hl7"],
)
def test_corpus_doubled_backslash_headers_are_accepted(file):
    """The files whose MSH-2 is literally '^~\\\\&' read with '^~\\&' and validate without problems."""
    h = read_header(corpus_text(file))
    assert (h.field(2), h.delimiters) == ("^~\\\\&", Delimiters.DEFAULT)
    assert validate_header(h) == []


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ("PID|1||MRN123^^^HOSP^MR~999^^^SSA^SS||DOE^JANE", "MRN123"),
        ("PID|1|OLD42^^^X|||DOE^JANE", "OLD42"),  # PID-3 empty: PID-2 (versions before 2.3.1)
        ("PID|1||A\\S\\B^^^HOSP", "A^B"),  # unescaped
        ("EVN|A01\rPID|1||FIRST\rPID|2||SECOND", "FIRST"),
        ("EVN|A01", ""),
        ("PID", ""),
        ("PIDX|1||NOPE", ""),
        ("PID|1||EARLY\nZPD|1\rZPE|2", "EARLY"),  # a line feed ends the segment before the next CR
    ],
)
def test_patient_id_is_the_first_identifier_of_the_first_pid(segments, expected):
    """What intake records as the message's patient id: PID-3.1 of the first repetition, else PID-2.1."""
    text = "MSH|^~\\&|PMS|NORTH|EMR|SOUTH|20260101||ADT^A01|M1|P|2.5.1\r" + segments
    assert patient_id(text, read_header(text).delimiters) == expected
    assert patient_id(text.replace("\r", "\n"), Delimiters.DEFAULT) == expected


def test_patient_id_agrees_with_the_message_parser_on_the_corpus():
    """On every corpus message with a PID, the cheap reader finds the full parser's PID-3.1 (or PID-2.1)."""
    compared = 0
    for entry in corpus_entries():
        text = decode(entry.path.read_bytes()).text
        if looks_like_batch(text):
            continue
        try:
            message = Message.parse(text)
        except HL7Error:
            continue
        if message.segment("PID") is None:
            continue
        expected = message.get("PID-3.1") or message.get("PID-2.1")
        assert patient_id(text, message.delimiters) == expected, entry.path.name
        compared += 1
    assert compared > 50
