"""Differential test: our Message against python-hl7's ``hl7.parse`` on every corpus message.

Each member message of each corpus file (batches split first) is parsed by both. They must
agree on segment IDs, raw fields, repetitions, components, subcomponents and on every unescaped
leaf value where the two libraries give escapes the same meaning. Where they legitimately
differ, the difference is stated here and pinned by the tests at the end of this module:

1. Segment separators: python-hl7 splits segments on CR only and strips whitespace around the
   message; we split on CR, LF and CRLF and keep whitespace. Both get the same input:
   ``'\\r'.join(split_segments(member)).strip()``.
2. Three encoding characters (``^~\\`` or ``^~}``): python-hl7 silently assumes ``&`` as the
   subcomponent separator; by position there is none, so for us ``&`` is data. Those messages
   are compared down to components (python-hl7's subcomponents joined back with ``&``); their
   leaf values are not compared.
3. Unescaping: python-hl7 turns ``\\H\\``/``\\N\\`` into ``_``, renders formatting escapes
   (``\\.br\\`` -> CR, ``\\.in\\`` -> spaces ...), drops ``\\Cxxyy\\``, ``\\Mxxyy\\``, ``\\Zxx\\``,
   unknown, empty and unterminated sequences, and decodes ``\\Xhh..\\`` one character per byte.
   We keep every non-delimiter sequence verbatim (rendering is the reader's business, and
   nothing is lost) and decode ``\\Xhh..\\`` as UTF-8 bytes (Latin-1 when not valid UTF-8;
   docs/hl7.md, pitfall 6). Leaves are compared wherever both readings agree: no escapes,
   delimiter escapes, and hex runs that are ASCII or not valid UTF-8.
4. Escaping: python-hl7 writes CR as ``\\.br\\`` (which it reads back as CR, and we keep as a
   formatting escape) and every non-ASCII character as ``\\Xhh\\`` of its code point, which is
   not a byte of any charset above U+00FF. We write CR/LF as ``\\X0D\\``/``\\X0A\\`` and leave
   non-ASCII text to the message charset.
5. Files we reject (bad delimiters, no MSH) are skipped with the reason.
6. MSH-2 ``^~\\\\&`` (the escape character doubled, a sender bug): we read it as ``^~\\&`` and
   keep MSH-2 as sent; python-hl7 reads it by position (component ``^``, repetition ``~``,
   escape ``\\``, subcomponent ``\\``). So python-hl7 is given such a message with MSH-2
   normalised to ``^~\\&``, everything else unchanged, and the full comparison runs; MSH-2 is the
   one field that differs (ours as sent, theirs normalised), and that is asserted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import hl7
import pytest

from engine.errors import HL7Error
from engine.hl7.batch import looks_like_batch, split_batch
from engine.hl7.charset import decode
from engine.hl7.message import Delimiters, Message, escape, split_segments, unescape
from tests.fakes.corpus import corpus_entries

_ADDRESSABLE = re.compile(r"[A-Z][A-Z0-9]{2}")
_HEX = re.compile(r"X(?:[0-9A-Fa-f]{2})+")


@dataclass(frozen=True)
class Member:
    """One message of one corpus file, as both parsers receive it, or why we reject it."""

    file: str
    index: int
    text: str
    our_error: str | None
    their_text: str  # what python-hl7 parses: text, with a doubled-backslash MSH-2 normalised (point 6)


def python_hl7_input(text: str, message: Message) -> str:
    """The text with MSH-2 replaced by the encoding characters we read from it, when they differ (point 6)."""
    raw = message.segments[0].fields[2]
    normalised = message.delimiters.encoding_chars
    if raw == normalised:
        return text
    assert (len(raw), raw[2:4], text[4 : 4 + len(raw)]) == (5, "\\\\", raw)
    return text[:4] + normalised + text[4 + len(raw) :]


def corpus_members() -> list[Member]:
    """Every member message of every corpus file (one entry with the error when we reject the file)."""
    members = []
    for entry in corpus_entries():
        text = decode(entry.path.read_bytes()).text
        try:
            texts = split_batch(text).messages if looks_like_batch(text) else (text,)
        except HL7Error as error:
            members.append(Member(entry.file, 0, text, f"split_batch: HL7Error {error.code}: {error}", text))
            continue
        for index, member in enumerate(texts):
            normalised = "\r".join(split_segments(member)).strip()
            try:
                their_text = python_hl7_input(normalised, Message.parse(normalised))
                error_text = None
            except HL7Error as error:
                their_text = normalised
                error_text = f"Message.parse: HL7Error {error.code}: {error}"
            members.append(Member(entry.file, index, normalised, error_text, their_text))
    return members


def their_structure(field) -> list[list[list[str]]]:
    """python-hl7 keeps a leaf as a plain string at whatever depth it stops: normalise it.

    The result is repetitions, components and subcomponents at every depth.
    """
    if isinstance(field, str):
        return [[[field]]]
    repetitions = []
    for repetition in field:
        if isinstance(repetition, str):
            repetitions.append([[repetition]])
            continue
        components = []
        for component in repetition:
            components.append([component] if isinstance(component, str) else [str(s) for s in component])
        repetitions.append(components)
    return repetitions


def our_structure(raw: str, d: Delimiters) -> list[list[list[str]]]:
    """Our raw field split into repetitions, components and subcomponents."""
    return [
        [
            component.split(d.subcomponent) if d.subcomponent else [component]
            for component in repetition.split(d.component)
        ]
        for repetition in raw.split(d.repetition)
    ]


def readings_agree(leaf: str, d: Delimiters) -> bool:
    """True when python-hl7's unescape and ours give this leaf the same meaning (see point 3)."""
    start = 0
    while True:
        opening = leaf.find(d.escape, start)
        if opening < 0:
            return True
        closing = leaf.find(d.escape, opening + 1)
        if closing < 0:
            return False
        body = leaf[opening + 1 : closing]
        if body not in ("F", "S", "R", "E", "T"):
            if not _HEX.fullmatch(body):
                return False
            data = bytes.fromhex(body[1:])
            if not data.isascii():
                try:
                    data.decode("utf-8")
                    return False
                except UnicodeDecodeError:
                    pass
        start = closing + 1


MEMBERS = corpus_members()


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: f"{m.file}#{m.index}")
def test_message_matches_python_hl7(member):
    """Same segments, fields, repetitions, components, subcomponents, and leaves where meanings agree."""
    if member.our_error is not None:
        pytest.skip(f"the engine rejects this input ({member.our_error})")
    try:
        theirs = hl7.parse(member.their_text)
    except Exception as error:  # python-hl7 raises anything from ParseException to IndexError
        pytest.skip(f"python-hl7 cannot parse it: {error!r}")
    ours = Message.parse(member.text)
    d = ours.delimiters
    compare_leaves = d.subcomponent is not None

    assert [str(segment[0]) for segment in theirs] == [segment.name for segment in ours.segments]
    occurrences: dict[str, int] = {}
    compared = 0
    for position, (their_segment, our_segment) in enumerate(zip(theirs, ours.segments)):
        name = our_segment.name
        occurrences[name] = occurrences.get(name, 0) + 1
        fields = our_segment.fields
        their_fields = [str(field) for field in their_segment]
        if position == 0 and member.their_text != member.text:
            # point 6: python-hl7 got MSH-2 normalised; we keep it as sent
            assert (their_fields[2], member.text[4 : 4 + len(fields[2])]) == (d.encoding_chars, fields[2])
            their_fields[2] = fields[2]
        assert their_fields == fields, name
        first = 3 if our_segment.is_header else 1
        for f in range(first, len(fields)):
            structure = our_structure(fields[f], d)
            expected = their_structure(their_segment[f])
            if not compare_leaves:
                expected = [[["&".join(subs)] for subs in components] for components in expected]
            assert structure == expected, f"{name}-{f}"
            if not compare_leaves or not _ADDRESSABLE.fullmatch(name):
                continue
            for r, components in enumerate(structure, 1):
                for c, subcomponents in enumerate(components, 1):
                    for s, leaf in enumerate(subcomponents, 1):
                        if readings_agree(leaf, d):
                            path = f"{name}[{occurrences[name]}]-{f}[{r}].{c}.{s}"
                            assert ours.get(path) == theirs.unescape(leaf), path
                            compared += 1
    assert compared > 0 or not compare_leaves


def test_most_corpus_leaves_are_compared():
    """The agreement filter leaves out only a small share of the corpus leaves."""
    agree = differ = 0
    for member in MEMBERS:
        if member.our_error is not None:
            continue
        message = Message.parse(member.text)
        d = message.delimiters
        if d.subcomponent is None:
            continue
        for segment in message.segments:
            for field in segment.fields[1:]:
                for components in our_structure(field, d):
                    for subcomponents in components:
                        for leaf in subcomponents:
                            if readings_agree(leaf, d):
                                agree += 1
                            else:
                                differ += 1
    assert agree > 10_000
    assert differ < agree / 100


def test_skips_are_only_inputs_we_reject():
    """Every member we accept is one python-hl7 parses, so no comparison is skipped for python-hl7's sake."""
    for member in MEMBERS:
        if member.our_error is None:
            hl7.parse(member.their_text)


def test_only_doubled_backslash_members_are_normalised_for_python_hl7():
    """Exactly the three corpus files with MSH-2 '^~\\\\&' are accepted and compared, MSH-2 normalised."""
    normalised = sorted(m.file for m in MEMBERS if m.their_text != m.text)
    assert normalised == [
        "adt/lfh_sample_unix.hl7",
        "malformed/lfh_sample_win.hl7",
        "malformed/nodehl7_literal_backslashes.hl7",
    ]
    for member in MEMBERS:
        if member.their_text != member.text:
            assert member.our_error is None
            assert member.text.startswith("MSH|^~\\\\&|")
            assert member.their_text == "MSH|^~\\&|" + member.text[len("MSH|^~\\\\&|") :]


# --- the documented differences, pinned -----------------------------------------------------

D = Delimiters.DEFAULT
PARSED = hl7.parse("MSH|^~\\&|A\rPID|1")


@pytest.mark.parametrize(
    ("leaf", "theirs", "ours"),
    [
        ("a\\.br\\b", "a\rb", "a\\.br\\b"),
        ("\\H\\bold\\N\\", "_bold_", "\\H\\bold\\N\\"),
        ("x\\C2D41\\y", "xy", "x\\C2D41\\y"),
        ("x\\Zlocal\\y", "xy", "x\\Zlocal\\y"),
        ("x\\Q\\y", "xy", "x\\Q\\y"),
        ("abc\\F", "abc", "abc\\F"),
        ("\\XC3A9\\", "Ã©", "é"),
    ],
)
@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
def test_python_hl7_renders_or_drops_what_we_keep(leaf, theirs, ours):
    """python-hl7 renders formatting, drops charset/local/unknown/unterminated escapes, reads hex by byte."""
    assert PARSED.unescape(leaf) == theirs
    assert unescape(leaf, D) == ours
    assert not readings_agree(leaf, D)


def test_python_hl7_assumes_a_subcomponent_separator():
    """With MSH-2 '^~\\\\' python-hl7 still splits on '&'; for us it is data."""
    text = "MSH|^~\\|A\rPID|1||a&b"
    assert hl7.parse(text).segment("PID")[3][0][0][0] == "a"
    assert Message.parse(text).get("PID-3.1.1") == "a&b"


def test_python_hl7_escapes_differently():
    """python-hl7 escapes CR as \\.br\\ and 'é' as \\Xe9\\; we use \\X0D\\ and keep 'é' for the charset."""
    assert PARSED.escape("a\rbé") == "a\\.br\\b\\Xe9\\"
    assert escape("a\rbé", D) == "a\\X0D\\bé"
    assert unescape(escape("a\rbé", D), D) == "a\rbé"


def test_python_hl7_guesses_doubled_backslash_delimiters():
    """python-hl7 reads MSH-2 '^~\\\\&' by position (subcomponent '\\'); we read '^~\\&'.

    That is what python-hl7 reads too once MSH-2 is normalised.
    """
    text = "MSH|^~\\\\&|A|B\rPID|1||a&b\\F\\c"
    guessed = hl7.parse(text)
    assert str(guessed.segment("MSH")[2]) == "^~\\\\&"
    assert (guessed.separators, guessed.esc) == ("\r|~^\\", "\\")
    assert their_structure(guessed.segment("PID")[3]) == [[["a&b", "F", "c"]]]

    ours = Message.parse(text)
    assert (ours.delimiters, ours.get("MSH-2")) == (D, "^~\\\\&")
    assert our_structure(ours.segments[1].fields[3], D) == [[["a", "b\\F\\c"]]]
    assert ours.get("PID-3.1.2") == "b|c"

    normalised = hl7.parse(python_hl7_input(text, ours))
    assert str(normalised.segment("MSH")[2]) == "^~\\&"
    assert their_structure(normalised.segment("PID")[3]) == [[["a", "b\\F\\c"]]]
    assert normalised.unescape("b\\F\\c") == "b|c"
