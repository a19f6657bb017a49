"""MSH-18 to codec mapping, MSH-18 peeking and lossless decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.hl7.charset import Decoded, codec_for, decode, encode, peek_msh18
from tests.fakes.corpus import corpus_entries


def msh(charset: str = "", tail: str = "\rPID|1") -> str:
    """An MSH whose MSH-18 is ``charset``, followed by ``tail``."""
    return f"MSH|^~\\&|APP|FAC|RAPP|RFAC|20260101||ADT^A01|42|P|2.5||||||{charset}{tail}"


@pytest.mark.parametrize(
    ("msh18", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "iso8859-1"),
        ("8859/2", "iso8859-2"),
        ("8859/5", "iso8859-5"),
        ("8859/9", "iso8859-9"),
        ("8859/15", "iso8859-15"),
        ("UNICODE", "utf-8"),
        ("UNICODE UTF-8", "utf-8"),
        ("UNICODE UTF-16", "utf-16"),
        ("UNICODE UTF-32", "utf-32"),
        ("ISO IR6", "ascii"),
        ("ISO IR14", "iso2022_jp"),
        ("ISO IR87", "iso2022_jp"),
        ("ISO IR159", "iso2022_jp_1"),
        ("GB 18030-2000", "gb18030"),
        ("KS X 1001", "euc_kr"),
        ("BIG-5", "big5"),
    ],
)
def test_codec_for_maps_table_0211_names(msh18, codec):
    """Every HL7 table 0211 name with a Python codec maps to that codec."""
    assert codec_for(msh18) == codec


@pytest.mark.parametrize("msh18", ["", "   ", "EBCDIC", "CNS 11643-1992", "8859/16"])
def test_codec_for_falls_back_to_the_default(msh18):
    """Empty, unknown and codec-less MSH-18 values give the default codec."""
    assert codec_for(msh18) == "utf-8"
    assert codec_for(msh18, default="cp1252") == "cp1252"


def test_codec_for_ignores_case_and_surrounding_spaces():
    """MSH-18 is matched case-insensitively after trimming spaces."""
    assert codec_for(" unicode utf-8 ") == "utf-8"


def test_every_mapped_codec_exists():
    """Each codec the table names is known to Python."""
    import codecs

    for name in [
        "ASCII",
        "8859/3",
        "8859/4",
        "8859/6",
        "8859/7",
        "8859/8",
        "ISO IR14",
        "ISO IR159",
        "KS X 1001",
    ]:
        codecs.lookup(codec_for(name))


def test_peek_reads_msh18():
    """MSH-18 is read from the bytes of the first segment."""
    assert peek_msh18(msh("8859/1").encode()) == "8859/1"


def test_peek_takes_the_first_repetition_and_component():
    """Only the first repetition's first component of MSH-18 names the charset."""
    assert peek_msh18(msh("UNICODE UTF-8~8859/1").encode()) == "UNICODE UTF-8"
    assert peek_msh18(msh("8859/1^x").encode()) == "8859/1"


def test_peek_uses_the_message_delimiters():
    """Custom separators from MSH-1/MSH-2 are used to find MSH-18."""
    raw = b"MSH!$r?@!A!B!C!D!2026!!ADT$A01!1!P!2.5!!!!!!8859/2r8859/1$x\rPID!1"
    assert peek_msh18(raw) == "8859/2"


def test_peek_does_not_read_past_the_first_segment():
    """A short MSH does not borrow fields from the next segment, whatever the line ending."""
    for ending in ("\r", "\n", "\r\n"):
        raw = (
            f"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5{ending}PID|1|2|3|4|5|6|7|8|9|10|11|12|13|14|15".encode()
        )
        assert peek_msh18(raw) == ""


def test_peek_strips_bom_and_leading_whitespace():
    """A UTF-8 BOM and leading CR/LF/VT before MSH are skipped."""
    assert peek_msh18(b"\xef\xbb\xbf" + msh("8859/1").encode()) == "8859/1"
    assert peek_msh18(b"\r\n\x0b" + msh("8859/1").encode()) == "8859/1"


@pytest.mark.parametrize(
    "raw", [b"", b"MSH", b"MSH\rPID|1", b"PID|1|||||||||||||||||||8859/1", b"\x00\x00\x02MSH|^~\\&|"]
)
def test_peek_returns_empty_without_msh18(raw):
    """No MSH, no separator or no MSH-18 gives ''."""
    assert peek_msh18(raw) == ""


@pytest.mark.parametrize(
    ("codec", "bom", "name"),
    [
        ("utf-16-le", b"\xff\xfe", "UNICODE UTF-16"),
        ("utf-16-be", b"\xfe\xff", "UNICODE UTF-16"),
        ("utf-32-le", b"\xff\xfe\x00\x00", "UNICODE UTF-32"),
        ("utf-32-be", b"\x00\x00\xfe\xff", "UNICODE UTF-32"),
        ("utf-16-le", b"", "UNICODE UTF-16"),
        ("utf-16-be", b"", "UNICODE UTF-16"),
        ("utf-32-le", b"", "UNICODE UTF-32"),
        ("utf-32-be", b"", "UNICODE UTF-32"),
    ],
)
def test_wide_encodings_are_detected_from_bom_or_nuls(codec, bom, name):
    """UTF-16/32 is recognised by its BOM or NUL pattern, decoded losslessly, BOM kept apart."""
    text = msh("", "\rPID|1||Zoë")
    raw = bom + text.encode(codec)
    assert peek_msh18(raw) == name
    assert decode(raw) == Decoded(text, name, codec, True, bom)
    assert bom + encode(text, codec) == raw


def test_latin1_message_decodes_with_the_declared_codec():
    """MSH-18 8859/1 decodes byte 0xE9 as 'é'."""
    decoded = decode(msh("8859/1", "\rPID|1||Ren\xe9").encode("latin-1"))
    assert decoded.text.endswith("René")
    assert (decoded.charset, decoded.codec, decoded.clean) == ("8859/1", "iso8859-1", True)


def test_empty_msh18_uses_the_default_codec():
    """Without MSH-18 the default codec (UTF-8 unless given) decodes the message."""
    raw = msh("", "\rPID|1||Zoë").encode()
    assert decode(raw) == Decoded(raw.decode(), "", "utf-8", True)
    assert decode(raw, default="latin-1").text.endswith("ZoÃ«")


def test_invalid_bytes_are_kept_and_reported():
    """Bytes invalid in the codec survive as surrogates, clean is False and encode restores them."""
    raw = msh("", "\rPID|1||\xff\xfe").encode("latin-1")
    decoded = decode(raw)
    assert decoded.clean is False
    assert decoded.text.endswith("\udcff\udcfe")
    assert encode(decoded.text, decoded.codec) == raw


def test_ascii_charset_decodes_leniently():
    """MSH-18 ASCII with bytes above 0x7F decodes without raising and round-trips."""
    raw = msh("ASCII", "\rPID|1||caf\xe9").encode("latin-1")
    decoded = decode(raw)
    assert (decoded.codec, decoded.clean) == ("ascii", False)
    assert encode(decoded.text, decoded.codec) == raw


def test_utf8_bom_is_stripped_and_remembered():
    """A UTF-8 BOM is removed from the text, kept in ``bom``, and selects UTF-8 over MSH-18."""
    raw = b"\xef\xbb\xbf" + msh("8859/1", "\rPID|1||Zoë").encode()
    decoded = decode(raw)
    assert decoded.text.startswith("MSH|") and decoded.text.endswith("Zoë")
    assert (decoded.bom, decoded.codec, decoded.charset) == (b"\xef\xbb\xbf", "utf-8", "8859/1")
    assert decoded.bom + encode(decoded.text, decoded.codec) == raw


def test_mislabelled_utf16_uses_the_default_codec():
    """MSH-18 UTF-16 on single-byte bytes (no BOM, no NULs) is not believed."""
    raw = msh("UNICODE UTF-16").encode()
    decoded = decode(raw)
    assert (decoded.codec, decoded.clean, decoded.text) == ("utf-8", True, raw.decode())


def test_multibyte_codec_that_cannot_round_trip_falls_back_to_replacement():
    """An ISO-2022-JP message with broken bytes decodes with U+FFFD and clean=False."""
    raw = msh("ISO IR87", "\rPID|1||\x1b$B\xff\xfe\x1b(B|").encode("latin-1")
    decoded = decode(raw)
    assert (decoded.codec, decoded.clean) == ("iso2022_jp", False)
    assert "\ufffd" in decoded.text


def test_truncated_utf16_falls_back_to_replacement():
    """UTF-16 with an odd trailing byte decodes without raising, marked unclean."""
    raw = b"\xff\xfe" + msh("").encode("utf-16-le") + b"A"
    decoded = decode(raw)
    assert (decoded.codec, decoded.clean) == ("utf-16-le", False)
    assert decoded.text.startswith("MSH|")


def test_encode_raises_for_characters_outside_the_codec():
    """encode refuses text the codec cannot represent."""
    with pytest.raises(UnicodeEncodeError):
        encode("Zoë", "ascii")


SINGLE_BYTE_CHARSETS = ["", "ASCII", "8859/1", "8859/3", "8859/7", "8859/15", "UNICODE UTF-8", "ISO IR6"]


@given(st.sampled_from(SINGLE_BYTE_CHARSETS), st.binary(max_size=200))
def test_single_byte_and_utf8_decoding_is_lossless(charset, body):
    """For single-byte and UTF-8 charsets, bom + encode(text, codec) is the input, always."""
    raw = msh(charset, "\r").encode() + body
    decoded = decode(raw)
    assert decoded.bom + encode(decoded.text, decoded.codec) == raw
    if decoded.clean:
        assert decoded.text == raw.decode(decoded.codec)


@given(st.binary(max_size=300))
def test_decode_never_raises(raw):
    """Arbitrary bytes decode to a Decoded; when clean, the decoding is exact."""
    decoded = decode(raw)
    assert isinstance(decoded.text, str)
    if decoded.clean:
        assert decoded.bom + encode(decoded.text, decoded.codec) == raw


@pytest.mark.parametrize("entry", corpus_entries(), ids=lambda entry: entry.file)
def test_corpus_files_decode_losslessly(entry):
    """Every corpus file decodes without raising and encodes back to its exact bytes."""
    raw = entry.path.read_bytes()
    decoded = decode(raw)
    assert decoded.bom + encode(decoded.text, decoded.codec) == raw
