"""Delimiters, segment splitting, escapes, field paths and the lazy Message."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.errors import HL7Error
from engine.hl7.message import (
    Delimiters,
    FieldPath,
    Message,
    escape,
    parse_path,
    parsed_text,
    split_segments,
    unescape,
)

D = Delimiters.DEFAULT
V27 = Delimiters.from_msh("|", "^~\\&#")
ENC3 = Delimiters.from_msh("|", "^~\\")

ADT = "\r".join(
    [
        "MSH|^~\\&|PMS^1.2.3^ISO|NORTH|EMR|SOUTH|20260101120000||ADT^A01^ADT_A01|MSG1|P|2.5.1",
        "EVN|A01|20260101120000",
        "PID|1||111^^^HOSP^MR~222^^^STATE^SS||DOE^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        "OBX|1|ST|A^Alpha||first",
        "OBX|2|ST|B^Beta||second\\F\\part",
        "OBX|3|TX|C^Gamma||line1\\.br\\line2",
        "ZPR|x&y^z",
    ]
)


# --- Delimiters -----------------------------------------------------------------------------


def test_default_delimiters():
    """DEFAULT is | ^ ~ \\ & with no truncation character, written as '^~\\&'."""
    assert (D.field, D.component, D.repetition, D.escape, D.subcomponent, D.truncation) == (
        "|",
        "^",
        "~",
        "\\",
        "&",
        None,
    )
    assert D.encoding_chars == "^~\\&"


@pytest.mark.parametrize(
    ("field_sep", "encoding_chars", "expected"),
    [
        ("|", "^~\\&", Delimiters("|", "^", "~", "\\", "&", None)),
        ("|", "^~\\&#", Delimiters("|", "^", "~", "\\", "&", "#")),
        ("|", "^~\\", Delimiters("|", "^", "~", "\\", None, None)),
        ("|", "^~}", Delimiters("|", "^", "~", "}", None, None)),
        ("$", "%~\\&", Delimiters("$", "%", "~", "\\", "&", None)),
        ("^", "~|\\&", Delimiters("^", "~", "|", "\\", "&", None)),
        (":", "-+?*", Delimiters(":", "-", "+", "?", "*", None)),
    ],
)
def test_from_msh_reads_the_declared_delimiters(field_sep, encoding_chars, expected):
    """MSH-1 and 3 to 5 encoding characters give the delimiters by position; MSH-2 is kept."""
    delimiters = Delimiters.from_msh(field_sep, encoding_chars)
    assert delimiters == expected
    assert delimiters.encoding_chars == encoding_chars


@pytest.mark.parametrize(
    ("field_sep", "encoding_chars"),
    [
        ("|", ""),
        ("|", "^"),
        ("|", "^~"),
        ("|", "^~\\&#$"),
        ("|", "^&&^"),
        ("|", "^~\\\\\\&"),
        ("|", "^\\\\~&"),
        ("|", "^~\\\\&#"),
        ("|", "^~\\\\^"),
        ("|", "^~|&"),
        ("|", "^ \\&"),
        ("|", "^\t\\&"),
        ("|", "^~\x01&"),
        ("|", "^~\x7f&"),
        ("|", "^~\udcff&"),
        ("|", "0000"),
        ("|", "^~y0"),
        ("H", "^~\\&"),
        ("1", "^~\\&"),
        (" ", "^~\\&"),
        ("\r", "^~\\&"),
        ("||", "^~\\&"),
        ("", "^~\\&"),
    ],
)
def test_from_msh_rejects_unusable_delimiters(field_sep, encoding_chars):
    """Wrong length, duplicates, alphanumerics, blanks and control characters give HL7Error 102 at MSH-2."""
    with pytest.raises(HL7Error) as raised:
        Delimiters.from_msh(field_sep, encoding_chars)
    assert (raised.value.code, raised.value.location) == (102, ("MSH", 1, 2))


def test_from_msh_reads_a_doubled_backslash_as_one_escape_character():
    """MSH-2 '^~\\\\&' (escape character doubled, a sender bug) gives '^~\\&' (no truncation character).

    encoding_chars is '^~\\&'.
    """
    delimiters = Delimiters.from_msh("|", "^~\\\\&")
    assert delimiters == Delimiters("|", "^", "~", "\\", "&", None)
    assert delimiters.encoding_chars == "^~\\&"
    assert Delimiters.from_header_segment("BHS|^~\\\\&|APP") == D


def test_from_header_segment_reads_fhs_and_bhs():
    """FHS/BHS fields 1-2 give delimiters; errors are located in that segment."""
    assert Delimiters.from_header_segment("BHS|^~\\&|APP") == D
    assert Delimiters.from_header_segment("MSH|^~\\&") == D
    with pytest.raises(HL7Error) as raised:
        Delimiters.from_header_segment("FHS|^^|APP")
    assert (raised.value.code, raised.value.location) == (102, ("FHS", 1, 2))
    with pytest.raises(HL7Error) as raised:
        Delimiters.from_header_segment("BHS")
    assert raised.value.code == 102


# --- split_segments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "A|1\rB|2\rC|3",
        "A|1\nB|2\nC|3",
        "A|1\r\nB|2\r\nC|3",
        "A|1\r\n\r\nB|2\n\nC|3\r",
        "\r\nA|1\rB|2\n\rC|3\r\n",
    ],
)
def test_split_segments_accepts_every_line_ending_and_drops_blank_lines(text):
    """CR, LF and CRLF all end segments; empty lines vanish."""
    assert split_segments(text) == ["A|1", "B|2", "C|3"]


def test_split_segments_strips_nothing_else():
    """Spaces, tabs, VT and other Unicode line breaks stay inside segments."""
    text = " A|1 \r\tB|\x0b2\x0c\x1c\x1d\x1e\x85\u2028\rC"
    assert split_segments(text) == [" A|1 ", "\tB|\x0b2\x0c\x1c\x1d\x1e\x85\u2028", "C"]


# --- escapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"),
        ("x\\X0D0A\\y", "x\r\ny"),
        ("\\X41\\\\x42\\", "A\\x42\\"),
        ("\\XC3A9\\", "é"),
        ("\\XC7\\\\XC3\\", "ÇÃ"),
        ("\\XC7C3\\", "ÇÃ"),
        ("\\E\\X0A\\E\\", "\\X0A\\"),
        ("\\E\\F\\", "\\F\\"),
    ],
)
def test_unescape_replaces_delimiter_and_hex_escapes(escaped, plain):
    """Delimiter escapes become delimiters; \\Xhh\\ becomes UTF-8 (else Latin-1) characters; no nesting."""
    assert unescape(escaped, D) == plain


@pytest.mark.parametrize(
    "kept",
    [
        "\\H\\bold\\N\\",
        "a\\.br\\b",
        "\\.sp2\\",
        "\\.in+4\\",
        "\\C2D41\\",
        "\\M2442\\",
        "\\Zlocal\\",
        "\\X\\",
        "\\X0\\",
        "\\XZZ\\",
        "\\X0D 0A\\",
        "a\\\\b",
        "a\\Q\\b",
        "abc\\F",
        "abc\\",
        "\\L\\",
        "\\P\\",
    ],
)
def test_unescape_keeps_other_sequences_verbatim(kept):
    """Formatting, charset, local, unknown, malformed, empty and unterminated sequences are kept."""
    assert unescape(kept, D) == kept


def test_unescape_uses_the_message_delimiters():
    """Escapes map to the message's own delimiters and escape character."""
    custom = Delimiters.from_msh(":", "-+?*")
    assert unescape("a?F?b?S?c?T?d?R?e?E?f\\F\\", custom) == "a:b-c*d+e?f\\F\\"


def test_truncation_escape_needs_a_truncation_character():
    """\\L\\ (hl7apy) and \\P\\ become the truncation character only when MSH-2 declares one."""
    assert unescape("1\\L\\2\\P\\3", V27) == "1#2#3"
    assert unescape("1\\L\\2", D) == "1\\L\\2"


def test_subcomponent_escape_needs_a_subcomponent_separator():
    """\\T\\ is kept when MSH-2 has only three characters."""
    assert unescape("a\\T\\b", ENC3) == "a\\T\\b"


@pytest.mark.parametrize(
    ("plain", "escaped"),
    [
        ("a|b^c~d&e\\f", "a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f"),
        ("line1\r\nline2", "line1\\X0D\\\\X0A\\line2"),
        ("no specials, #1", "no specials, #1"),
        ("", ""),
    ],
)
def test_escape_protects_delimiters_and_line_breaks(plain, escaped):
    """Delimiters and the escape character get their escapes; CR and LF become hex escapes."""
    assert escape(plain, D) == escaped


def test_escape_of_truncation_and_subcomponent_follows_the_delimiters():
    """'#' is escaped only with a truncation character, '&' only with a subcomponent separator."""
    assert escape("#&", V27) == "\\L\\\\T\\"
    assert escape("#&", ENC3) == "#&"


def test_escape_without_escape_character():
    """Without an escape character plain values pass and values needing escapes are refused."""
    bare = Delimiters("|", "^", "~", None, "&", None)
    assert escape("plain", bare) == "plain"
    assert unescape("a\\F\\b", bare) == "a\\F\\b"
    with pytest.raises(ValueError):
        escape("a|b", bare)


DELIMITER_SETS = st.sampled_from(
    [D, V27, ENC3, Delimiters.from_msh(":", "-+?*"), Delimiters.from_msh("^", "~|\\&")]
)


@given(st.text(), DELIMITER_SETS)
def test_escape_unescape_round_trip(text, delims):
    """unescape(escape(v)) == v for every string and delimiter set."""
    assert unescape(escape(text, delims), delims) == text


@given(st.text(), DELIMITER_SETS)
def test_escaped_values_contain_no_structural_characters(text, delims):
    """An escaped value holds no separator and no CR/LF, so it stays one leaf."""
    escaped = escape(text, delims)
    for char in (delims.field, delims.component, delims.repetition, delims.subcomponent, "\r", "\n"):
        if char is not None:
            assert char not in escaped


# --- field paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("PID-3", FieldPath("PID", None, 3, None, None, None)),
        ("PID-3[2].1", FieldPath("PID", None, 3, 2, 1, None)),
        ("OBX[3]-5", FieldPath("OBX", 3, 5, None, None, None)),
        ("MSH-9.2", FieldPath("MSH", None, 9, None, 2, None)),
        ("PID-5.1.1", FieldPath("PID", None, 5, None, 1, 1)),
        ("ZP1[12]-10[3].4.5", FieldPath("ZP1", 12, 10, 3, 4, 5)),
    ],
)
def test_parse_path_reads_every_part(path, expected):
    """SEG[occ]-field[rep].component.subcomponent parses to a FieldPath that prints back the same."""
    assert parse_path(path) == expected
    assert str(parse_path(path)) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "PID",
        "PID-",
        "pid-3",
        "PID3",
        " PID-3",
        "PID-3 ",
        "PID-3.",
        "PID-3.1.1.1",
        "PID-x",
        "PID-3[x]",
        "PID-3[1][2]",
        "PID-0",
        "PID[0]-1",
        "PID-3[0]",
        "PID-3.0",
        "PID-3.1.0",
        "1ID-3",
        "PIDX-3",
        "PID-3[-1]",
    ],
)
def test_parse_path_rejects_bad_syntax(path):
    """Malformed paths and 0 indices raise ValueError naming the path."""
    with pytest.raises(ValueError, match="invalid field path"):
        parse_path(path)


# --- Message --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\r\n", "PID|1", "MSH", "MSH\rPID|1", " MSH|^~\\&|A", "\x0bMSH|^~\\&|A", "EVN|x\rMSH|^~\\&|A"],
)
def test_parse_requires_msh_first(text):
    """Without MSH plus a separator as the first segment, parse raises HL7Error 100 at MSH."""
    with pytest.raises(HL7Error) as raised:
        Message.parse(text)
    assert (raised.value.code, raised.value.location) == (100, ("MSH",))


def test_parse_rejects_bad_delimiters():
    """Unusable MSH-1/MSH-2 raise HL7Error 102."""
    with pytest.raises(HL7Error) as raised:
        Message.parse("MSH|^~\\\\\\&|A|B")
    assert raised.value.code == 102


def test_parse_reads_a_doubled_backslash_msh2_as_default_delimiters():
    """MSH-2 '^~\\\\&' parses with delimiters '^~\\&' ('&' splits, '\\F\\' unescapes).

    MSH-2 and the text are kept as sent.
    """
    text = "MSH|^~\\\\&|A|B\rPID|1||a&b\\F\\c"
    message = Message.parse(text)
    assert message.delimiters == D
    assert message.get("MSH-2") == "^~\\\\&"
    assert (message.get("PID-3.1.1"), message.get("PID-3.1.2")) == ("a", "b|c")
    assert message.to_text() == text


def test_parse_skips_blank_lines_before_msh():
    """Leading CR/LF lines are blank lines, not content."""
    assert Message.parse("\r\nMSH|^~\\&|A\n\nPID|1").to_text() == "MSH|^~\\&|A\rPID|1"


def test_segments_are_split_only_when_asked():
    """Parsing keeps segment texts; a segment is split into fields on first access only."""
    message = Message.parse(ADT)
    assert all(segment._fields is None for segment in message.segments)
    message.get("PID-3")
    assert [segment._fields is not None for segment in message.segments] == [
        False,
        False,
        True,
        False,
        False,
        False,
        False,
    ]


def test_segments_and_lookup():
    """Segments keep their order; lookup by name and 1-based occurrence."""
    message = Message.parse(ADT)
    assert len(message) == 7
    assert [segment.name for segment in message.segments] == ["MSH", "EVN", "PID", "OBX", "OBX", "OBX", "ZPR"]
    assert message.segment("OBX", 2).raw == "OBX|2|ST|B^Beta||second\\F\\part"
    assert message.segment("OBX", 4) is None
    assert message.segment("NK1") is None
    assert [segment.field(1) for segment in message.segments_named("OBX")] == ["1", "2", "3"]
    assert message.delimiters == D


def test_msh_fields_follow_the_off_by_one_rule():
    """MSH field 1 is the separator, 2 the encoding characters, 9 the message type."""
    msh = Message.parse(ADT).segment("MSH")
    fields = msh.fields
    assert fields[:4] == ["MSH", "|", "^~\\&", "PMS^1.2.3^ISO"]
    assert (msh.field(9), msh.field(10), msh.field(12), msh.field(13)) == (
        "ADT^A01^ADT_A01",
        "MSG1",
        "2.5.1",
        "",
    )
    assert msh.is_header


def test_other_segments_index_fields_from_one():
    """For non-header segments field i is the i-th value after the segment ID."""
    pid = Message.parse(ADT).segment("PID")
    assert (pid.field(0), pid.field(1), pid.field(2), pid.field(5), pid.field(99), pid.field(-1)) == (
        "PID",
        "1",
        "",
        "DOE^JOHN^Q",
        "",
        "",
    )
    assert not pid.is_header


def test_fields_returns_a_copy():
    """Changing the list from ``fields`` does not change the segment."""
    pid = Message.parse(ADT).segment("PID")
    pid.fields[1] = "changed"
    assert pid.field(1) == "1"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("MSH-1", "|"),
        ("MSH-2", "^~\\&"),
        ("MSH-2.1", "^~\\&"),
        ("MSH-2.2", ""),
        ("MSH-9", "ADT^A01^ADT_A01"),
        ("MSH-9.1", "ADT"),
        ("MSH-9.2", "A01"),
        ("MSH-9.4", ""),
        ("MSH-10", "MSG1"),
        ("PID-3", "111^^^HOSP^MR"),
        ("PID-3[2]", "222^^^STATE^SS"),
        ("PID-3[2].4", "STATE"),
        ("PID-3.1", "111"),
        ("PID-3[3]", ""),
        ("PID-5.2", "JOHN"),
        ("PID-5.2.1", "JOHN"),
        ("PID-5.2.2", ""),
        ("PID-7", "19800101"),
        ("PID-11", "1 Main St\\S\\Apt 2^^Town"),
        ("PID-11.1", "1 Main St^Apt 2"),
        ("PID-11.3", "Town"),
        ("PID-40", ""),
        ("OBX-5", "first"),
        ("OBX[2]-5", "second|part"),
        ("OBX[3]-5", "line1\\.br\\line2"),
        ("OBX[4]-5", ""),
        ("ZPR-1", "x&y^z"),
        ("ZPR-1.1", "x&y"),
        ("ZPR-1.1.2", "y"),
        ("ZPR-1.2", "z"),
        ("NK1-1", ""),
    ],
)
def test_get(path, value):
    """Leaves come back unescaped; parts above the leaf level come back raw with delimiters."""
    assert Message.parse(ADT).get(path) == value


def test_get_without_subcomponent_separator_treats_ampersand_as_data():
    """With a 3-character MSH-2 '&' is text: the component is the only subcomponent."""
    message = Message.parse("MSH|^~\\|A\rPID|1||a&b^c")
    assert message.get("PID-3") == "a&b^c"
    assert message.get("PID-3.1") == "a&b"
    assert message.get("PID-3.1.1") == "a&b"
    assert message.get("PID-3.1.2") == ""


def test_get_with_nondefault_delimiters():
    """Paths use the message's own separators (field '^', component '~', repetition '|')."""
    message = Message.parse("MSH^~|\\&^APP^^^^2026^^ADT~A24^1\rPID^1^^a~b|c~d")
    assert message.get("MSH-9.2") == "A24"
    assert message.get("PID-3[2].1") == "c"
    assert message.get("PID-3") == "a~b"


def test_get_rejects_bad_paths():
    """A malformed path raises ValueError."""
    with pytest.raises(ValueError):
        Message.parse(ADT).get("PID.3")


def test_to_text_reproduces_the_input():
    """Unchanged messages are written back exactly, with the separator asked for."""
    message = Message.parse(ADT.replace("\r", "\r\n"))
    assert message.to_text() == ADT
    assert message.to_text("\n") == ADT.replace("\r", "\n")


@pytest.mark.parametrize(
    ("path", "value", "segment"),
    [
        (
            "PID-1",
            "2",
            "PID|2||111^^^HOSP^MR~222^^^STATE^SS||DOE^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        ),
        (
            "PID-5.2",
            "JANE",
            "PID|1||111^^^HOSP^MR~222^^^STATE^SS||DOE^JANE^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        ),
        ("PID-3", "999", "PID|1||999~222^^^STATE^SS||DOE^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town"),
        (
            "PID-3[4]",
            "X",
            "PID|1||111^^^HOSP^MR~222^^^STATE^SS~~X||DOE^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        ),
        (
            "PID-5.5",
            "JR",
            "PID|1||111^^^HOSP^MR~222^^^STATE^SS||DOE^JOHN^Q^^JR||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        ),
        (
            "PID-5.1.3",
            "S",
            "PID|1||111^^^HOSP^MR~222^^^STATE^SS||DOE&&S^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town",
        ),
        (
            "PID-13",
            "a|b",
            "PID|1||111^^^HOSP^MR~222^^^STATE^SS||DOE^JOHN^Q||19800101|M|||1 Main St\\S\\Apt 2^^Town"
            "||a\\F\\b",
        ),
    ],
)
def test_set_escapes_and_grows_the_addressed_part(path, value, segment):
    """set writes the escaped value at the same part get reads, padding fields, repetitions and components."""
    message = Message.parse(ADT)
    message.set(path, value)
    assert message.segment("PID").raw == segment
    assert message.get(path) == value
    assert message.to_text() == ADT.replace(ADT.split("\r")[2], segment)


def test_set_appends_missing_segments():
    """A missing segment occurrence is appended at the end, with empty ones before it."""
    message = Message.parse("MSH|^~\\&|A\rPID|1")
    message.set("ZXY[2]-2.2", "v")
    assert message.to_text() == "MSH|^~\\&|A\rPID|1\rZXY\rZXY||^v"
    assert message.get("ZXY[2]-2.2") == "v"


def test_set_msh_fields():
    """MSH fields from 3 on can be set; the off-by-one rule holds when writing."""
    message = Message.parse("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5")
    message.set("MSH-10", "NEW")
    message.set("MSH-9.3", "ADT_A01")
    assert message.to_text() == "MSH|^~\\&|A|B|C|D|2026||ADT^A01^ADT_A01|NEW|P|2.5"


def test_set_on_a_bare_header_segment_adds_its_separator():
    """Setting a field of a bare 'BHS' line writes the separator as BHS-1 first."""
    message = Message.parse("MSH|^~\\&|A\rBHS")
    message.set("BHS-3", "v")
    assert message.segment("BHS").raw == "BHS||v"
    assert message.get("BHS-3") == "v"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("MSH|^~\\&|A", "MSH-1"),
        ("MSH|^~\\&|A", "MSH-2"),
        ("MSH|^~\\&|A\rBHS|^~\\&", "BHS-2"),
        ("MSH|^~\\&|A", "MSH[2]-3"),
        ("MSH|^~\\&|A", "FHS-3"),
        ("MSH|^~\\|A\rPID|1", "PID-3.1.2"),
        ("MSH|^~\\&|A", "PID.3"),
    ],
)
def test_set_refuses_what_it_cannot_write(text, path):
    """Delimiter fields, new header segments, subcomponents without separator and bad paths: ValueError."""
    message = Message.parse(text)
    with pytest.raises(ValueError):
        message.set(path, "x")
    assert message.to_text() == text


# --- properties -----------------------------------------------------------------------------

PATHS = st.builds(
    lambda segment, occurrence, field, repetition, component, subcomponent: str(
        FieldPath(segment, occurrence, field, repetition, component, subcomponent)
    ),
    st.sampled_from(["MSH", "PID", "OBX", "ZZZ", "BHS"]),
    st.none() | st.integers(1, 3),
    st.integers(1, 25),
    st.none() | st.integers(1, 3),
    st.none() | st.integers(1, 4),
    st.none() | st.integers(1, 3),
)
HL7ISH = st.text(alphabet=st.sampled_from(list("MSHPIDOBX|^~\\&#\r\n 0aZ\x0b\u00e9")), max_size=120)
MSH_STARTED = st.builds(
    lambda head, body: head + body,
    st.sampled_from(["MSH|^~\\&|", "MSH|^~\\&#|", "MSH|^~\\|", "MSH$%~\\&$", "MSH|"]),
    HL7ISH,
)


@given(st.one_of(st.text(max_size=200), HL7ISH, MSH_STARTED), st.lists(PATHS, max_size=5))
def test_parse_and_get_raise_only_hl7error(text, paths):
    """Any text parses or raises HL7Error; get on any valid path then returns a string."""
    try:
        message = Message.parse(text)
    except HL7Error:
        return
    for path in paths:
        assert isinstance(message.get(path), str)
    for segment in message.segments:
        assert isinstance(segment.fields, list)


@given(st.one_of(st.text(max_size=200), MSH_STARTED))
def test_to_text_round_trips(text):
    """Message.parse(t).to_text() == '\\r'.join(split_segments(t)) whenever t parses."""
    try:
        message = Message.parse(text)
    except HL7Error:
        assume(False)
    assert message.to_text() == "\r".join(split_segments(text))


@given(st.one_of(st.text(max_size=200), HL7ISH, MSH_STARTED))
def test_parsed_text_is_the_text_of_the_parsed_message_or_its_error(text):
    """parsed_text(t) == Message.parse(t).to_text(), and raises the same HL7Error when parse does."""
    try:
        expected = Message.parse(text).to_text()
    except HL7Error as error:
        with pytest.raises(HL7Error) as raised:
            parsed_text(text)
        assert (raised.value.code, str(raised.value)) == (error.code, str(error))
        return
    assert parsed_text(text) == expected


@given(MSH_STARTED, PATHS, st.text(max_size=20))
def test_set_then_get_returns_the_value(text, path, value):
    """After set(path, v), get(path) is v, also after writing and reparsing; a refused set changes nothing."""
    try:
        message = Message.parse(text)
    except HL7Error:
        assume(False)
    before = [segment.raw for segment in message.segments]
    try:
        message.set(path, value)
    except ValueError:
        assert [segment.raw for segment in message.segments] == before
        return
    assert message.get(path) == value
    assert Message.parse(message.to_text()).get(path) == value
