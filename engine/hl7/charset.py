"""MSH-18 character sets mapped to Python codecs, and byte decoding that never raises.

The bytes of a frame are decoded once, on intake, with the codec MSH-18 names. MSH itself is
ASCII in every single-byte charset HL7 allows and in UTF-8, so MSH-18 is read straight from the
bytes before anything is decoded (as HAPI's ``CharSetUtil`` does). UTF-16 and UTF-32 are told
apart by a byte-order mark or by the NUL bytes around ``MSH``.

Decoding keeps every byte: bytes that are not valid in the codec become lone surrogates
(``errors="surrogateescape"``), so ``decoded.bom + encode(decoded.text, decoded.codec)`` gives
back the exact input. ``clean`` says whether that was needed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decoded", "codec_for", "decode", "encode", "encode_lenient", "peek_msh18"]

# HL7 table 0211 -> Python codec. Japanese charsets travel in ISO 2022 escape sequences, so
# they map to Python's ISO-2022-JP family. Python has no EUC-TW codec, so "CNS 11643-1992"
# is absent and decodes with the default codec (clean=False for its non-ASCII bytes).
_CODECS = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "ISO IR6": "ascii",
    "ISO IR14": "iso2022_jp",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_1",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}

_UTF8_BOM = b"\xef\xbb\xbf"

# (prefix, codec, MSH-18 name); UTF-32 LE before UTF-16 LE: its BOM starts with UTF-16's.
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UNICODE UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UNICODE UTF-32"),
    (b"\xff\xfe", "utf-16-le", "UNICODE UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UNICODE UTF-16"),
)
_WIDE_NO_BOM = (
    (b"M\x00\x00\x00", "utf-32-le", "UNICODE UTF-32"),
    (b"\x00\x00\x00M", "utf-32-be", "UNICODE UTF-32"),
    (b"M\x00S\x00", "utf-16-le", "UNICODE UTF-16"),
    (b"\x00M\x00S", "utf-16-be", "UNICODE UTF-16"),
)
_WIDE_CODECS = frozenset({"utf-16", "utf-32"})
_ASCII_SPACE = frozenset(b" \t\r\n\x0b\x0c")


@dataclass(slots=True)
class Decoded:
    """A decoded frame: ``bom + encode(text, codec)`` is the original bytes.

    Read-only by convention: one is made for every frame, and a frozen dataclass's __init__ costs
    twice as much.
    """

    text: str
    charset: str
    codec: str
    clean: bool
    bom: bytes = b""


def codec_for(msh18: str, default: str = "utf-8") -> str:
    """Return the Python codec for an MSH-18 value; ``default`` when it is empty or unknown."""
    return _CODECS.get(msh18.strip().upper(), default)


def _wide_encoding(raw: bytes) -> tuple[bytes, str, str] | None:
    """Return (bom, codec, MSH-18 name) when ``raw`` is UTF-16 or UTF-32, else None."""
    head = raw[:4]
    if b"\x00" not in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    for bom, codec, name in _WIDE_BOMS:
        if head.startswith(bom):
            return bom, codec, name
    for prefix, codec, name in _WIDE_NO_BOM:
        if head == prefix:
            return b"", codec, name
    return None


def peek_msh18(raw: bytes) -> str:
    """Return MSH-18 (first repetition, first component) read from the bytes; '' when absent.

    For UTF-16/32 bytes (BOM or NULs around ``MSH``) the name of that encoding is returned.
    """
    wide = _wide_encoding(raw)
    if wide is not None:
        return wide[2]
    return _msh18(raw)


def _msh18(raw: bytes) -> str:
    """MSH-18 of single-byte or UTF-8 bytes, found without copying the message."""
    start = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    length = len(raw)
    while start < length and raw[start] in _ASCII_SPACE:
        start += 1
    if not raw.startswith(b"MSH", start):
        return ""
    end = raw.find(b"\r", start)
    if end < 0:
        end = length
    line_feed = raw.find(b"\n", start, end)
    segment = raw[start : line_feed if line_feed >= 0 else end]
    if len(segment) < 4:
        return ""
    fields = segment[4:].split(segment[3:4], 17)
    if len(fields) < 17:
        return ""
    encoding_chars = fields[0]
    value = fields[16]
    if len(encoding_chars) >= 2:
        value = value.split(encoding_chars[1:2], 1)[0]
    if encoding_chars:
        value = value.split(encoding_chars[0:1], 1)[0]
    return value.decode("latin-1").strip()


def decode(raw: bytes, default: str = "utf-8") -> Decoded:
    """Decode a frame with the codec MSH-18 names (``default`` when none); never raises.

    A UTF-8 byte-order mark selects UTF-8 whatever MSH-18 says and is kept in ``bom``. When
    MSH-18 names UTF-16/32 but the bytes carry no BOM and no NULs around ``MSH`` (the sender
    mislabelled them), the default codec is used.
    """
    wide = _wide_encoding(raw)
    if wide is not None:
        bom, codec, charset = wide
        return _decode_with(raw[len(bom) :], charset, codec, bom)
    charset = _msh18(raw)
    if raw.startswith(_UTF8_BOM):
        return _decode_with(raw[len(_UTF8_BOM) :], charset, "utf-8", _UTF8_BOM)
    codec = _CODECS.get(charset.upper(), default) if charset else default
    if codec in _WIDE_CODECS:
        codec = default
    return _decode_with(raw, charset, codec, b"")


def _decode_with(body: bytes, charset: str, codec: str, bom: bytes) -> Decoded:
    try:
        return Decoded(body.decode(codec), charset, codec, True, bom)
    except UnicodeDecodeError:
        pass
    try:
        text = body.decode(codec, "surrogateescape")
        if text.encode(codec, "surrogateescape") == body:
            return Decoded(text, charset, codec, False, bom)
    except UnicodeError:
        pass
    # Stateful and wide codecs cannot always carry stray bytes through; keep what decodes.
    return Decoded(body.decode(codec, "replace"), charset, codec, False, bom)


def encode(text: str, codec: str) -> bytes:
    """Encode text back to bytes; surrogate-escaped bytes from ``decode`` come back unchanged.

    Raises UnicodeEncodeError when ``text`` holds a character the codec cannot represent.
    """
    return text.encode(codec, "surrogateescape")


def encode_lenient(text: str, codec: str) -> bytes:
    """``encode``, but never raises: a character the codec cannot carry becomes ``?``.

    For what must go out or be kept whatever the text holds (an answer, a batch member's bytes):
    after a lossy decode (a stateful codec such as ISO-2022-JP given stray bytes keeps U+FFFD, which
    it cannot encode) ``encode`` would fail.
    """
    try:
        return text.encode(codec, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode(codec, "replace")
