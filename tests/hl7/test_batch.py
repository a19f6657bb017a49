"""Batch detection and splitting: FHS/BHS/BTS/FTS envelopes and back-to-back messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import HL7Error
from engine.hl7.batch import Batch, looks_like_batch, split_batch
from engine.hl7.charset import decode
from engine.hl7.header import read_header, validate_header
from engine.hl7.message import Delimiters
from tests.fakes.corpus import corpus_entries

M1 = "MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1"
M2 = "MSH|^~\\&|A|B|C|D|2026||ADT^A08|2|P|2.5\rPID|2\rPV1|1"
FHS = "FHS|^~\\&|A|B|C|D|2026||||FILE-7"
BHS = "BHS|^~\\&|A|B|C|D|2026||||BATCH-9"


def lines(*segments: str, ending: str = "\r") -> str:
    """Join segments (or messages) with the given line ending."""
    return ending.join(segment.replace("\r", ending) for segment in segments)


# --- looks_like_batch -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        lines(FHS, BHS, M1, "BTS|1", "FTS|1"),
        lines(BHS, M1),
        "\r\n\x0b " + lines(BHS, M1),
        lines(M1, M2),
        lines(M1, M2, ending="\n"),
        lines(M1, M2, ending="\r\n"),
        lines("EVN|x", M1, M2),
        lines(M1, "BTS|1"),
        lines(M1, "BTS|1", ending="\n"),
        lines(M1, "BTS|1", "FTS|1", ending="\r\n"),
    ],
)
def test_batches_and_back_to_back_messages_look_like_batches(text):
    """FHS/BHS at the start, a BTS segment (after CR or LF), or two segments starting MSH, mark a batch."""
    assert looks_like_batch(text)


@pytest.mark.parametrize(
    "text",
    [
        M1,
        "\r\n" + M1,
        "\nMSH|^~\\&|A",
        lines(M1, "NTE|1|MSH|x", "OBX|1|ST|MSH"),
        lines(M1, "FTS|1|END OF FILE"),
        lines(M1, "NTE|1|BTS|x"),
        lines("EVN|x", M1),
        "",
    ],
)
def test_single_messages_do_not_look_like_batches(text):
    """One MSH, wherever 'MSH' or 'BTS' appears inside fields, is not a batch; nor is a stray FTS alone."""
    assert not looks_like_batch(text)


# --- split_batch ----------------------------------------------------------------------------


def test_file_with_two_batches():
    """FHS, two BHS..BTS batches and FTS give every message, the envelope and the counts."""
    batch = split_batch(lines(FHS, BHS, M1, M2, "BTS|2", "BHS|^~\\&|X", M1, "BTS|1", "FTS|2"))
    assert batch == Batch(
        file_header=FHS,
        batch_header=BHS,
        messages=(M1, M2, M1),
        batch_control_id="BATCH-9",
        declared_count=3,
        delimiters=Delimiters.DEFAULT,
    )


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n", "\r\n\r\n"])
def test_messages_are_cr_joined_whatever_the_line_endings(ending):
    """Members come back with CR between segments, no trailing CR, blank lines gone."""
    batch = split_batch(lines(BHS, M1, M2, "BTS|2", ending=ending) + ending)
    assert batch.messages == (M1, M2)


def test_back_to_back_messages_without_envelope():
    """Messages without FHS/BHS split at each MSH; no envelope, no count, no control id."""
    assert split_batch(lines(M1, M2)) == Batch(None, None, (M1, M2), "", None, None)


def test_file_control_id_is_used_without_batch_header():
    """Without a BHS, FHS-11 is the control id; BHS-11 wins when both exist."""
    assert split_batch(lines(FHS, M1, "FTS|1")).batch_control_id == "FILE-7"
    assert split_batch(lines(FHS, "BHS|^~\\&", M1)).batch_control_id == "FILE-7"


def test_empty_batch_is_valid():
    """FHS/BHS/BTS/FTS with no message is an empty batch, its declared count kept as is."""
    batch = split_batch(lines(FHS, BHS, "BTS|0", "FTS|1"))
    assert (batch.messages, batch.declared_count, batch.file_header, batch.batch_header) == ((), 0, FHS, BHS)


def test_declared_count_is_reported_not_enforced():
    """A BTS-1 that differs from the messages found is kept in declared_count; unreadable ones are ignored."""
    assert split_batch(lines(BHS, M1, "BTS|5")).declared_count == 5
    assert split_batch(lines(BHS, M1, "BTS|many")).declared_count is None
    assert split_batch(lines(BHS, M1, "BTS")).declared_count is None


def test_trailers_are_optional_and_may_stand_alone():
    """BHS without BTS, BTS without BHS and FTS without FHS are tolerated."""
    assert split_batch(lines(BHS, M1, M2)).messages == (M1, M2)
    assert split_batch(lines(M1, "BTS|1")).messages == (M1,)
    assert split_batch(lines(BHS, M1, "BTS|1", "FTS|1")).messages == (M1,)


def test_leading_whitespace_and_trailing_blank_text_are_ignored():
    """Whitespace before the envelope and whitespace-only lines after FTS are not segments."""
    assert split_batch("\x0b\r\n" + lines(FHS, M1, "FTS|1", " ", "\x0b")).messages == (M1,)


def test_each_message_keeps_its_own_encoding_characters():
    """A member with a different MSH-2 (same field separator) is split, not rejected."""
    odd = "MSH|^~&|A|B|C|D|2026||ADT^A01|3|P|2.5\rPID|3"
    assert split_batch(lines(FHS, BHS, M1, odd, "BTS|2", "FTS|1")).messages == (M1, odd)


@pytest.mark.parametrize(
    ("text", "message", "location"),
    [
        (lines(BHS, "EVN|A04", M1), "Segment received before message header: EVN", ("EVN",)),
        (lines(FHS, BHS, "PID|1", "BTS|0", "FTS|1"), "Segment received before message header: PID", ("PID",)),
        (lines(FHS, "PID|1", "FTS|1"), "Segment received before message header: PID", ("PID",)),
        (lines(BHS, M1, "BTS|1", "NTE|1", M2), "Segment received before message header: NTE", ("NTE",)),
        (lines("EVN|x", M1, M2), "Segment received before message header: EVN", ("EVN",)),
        (lines(FHS, BHS, M1, FHS), "File cannot have more than one FHS segment", ("FHS",)),
        (lines(M1, FHS, M2), "FHS must be the first segment of a file", ("FHS",)),
        (lines(BHS, FHS, M1), "FHS must be the first segment of a file", ("FHS",)),
        (
            lines(BHS, M1, BHS, M2),
            "Batch cannot have more than one BHS segment (no BTS before this BHS)",
            ("BHS",),
        ),
        (lines(FHS, M1, "FTS|1", M2), "MSH segment after the file trailer (FTS)", ("MSH",)),
        ("", "no FHS, BHS or MSH segment: not a batch", ("MSH",)),
        ("\r\n", "no FHS, BHS or MSH segment: not a batch", ("MSH",)),
    ],
)
def test_bad_envelope_sequences_raise_100(text, message, location):
    """Segments outside messages, a second FHS or open BHS, or text after FTS give HL7Error 100."""
    with pytest.raises(HL7Error) as raised:
        split_batch(text)
    assert (str(raised.value), raised.value.code, raised.value.location) == (message, 100, location)


@pytest.mark.parametrize(
    ("text", "location"),
    [
        (lines("BHS:-+?*:::::2023", M1, "BTS:1"), ("MSH", 1, 1)),
        (lines("FHS:-+?*:x", "BHS|^~\\&", M1), ("BHS", 1, 1)),
        (lines("FHS|^^|x", M1), ("FHS", 1, 2)),
        (lines(M1, "BHS|^~\\\\\\&", M2), ("BHS", 1, 2)),
        (lines(M1, "BHS|^\\\\~&", M2), ("BHS", 1, 2)),
    ],
)
def test_unusable_or_mixed_delimiters_raise_102(text, location):
    """Invalid envelope delimiters, or a field separator that changes inside a file, give HL7Error 102."""
    with pytest.raises(HL7Error) as raised:
        split_batch(text)
    assert (raised.value.code, raised.value.location) == (102, location)


def test_bhs_with_doubled_backslash_is_read_as_default_delimiters():
    """A BHS-2 written '^~\\\\&' (escape character doubled) splits with the delimiters '^~\\&'.

    The BHS is kept verbatim.
    """
    doubled = "BHS|^~\\\\&|A|B|C|D|2026||||BATCH-9"
    assert split_batch(lines(doubled, M1, M2, "BTS|2")) == Batch(
        file_header=None,
        batch_header=doubled,
        messages=(M1, M2),
        batch_control_id="BATCH-9",
        declared_count=2,
        delimiters=Delimiters.DEFAULT,
    )


PIECES = st.sampled_from(
    [
        "MSH|^~\\&|",
        "MSH:^~\\&:",
        "BHS|^~\\&|",
        "FHS|^~\\&|",
        "BHS|^^",
        "BTS|1",
        "FTS|1",
        "PID|1",
        "\r",
        "\n",
        " ",
        "x",
    ]
)


@given(st.lists(PIECES, max_size=30).map("".join))
def test_split_batch_raises_only_hl7error(text):
    """Any mix of envelope and message segments splits or raises HL7Error 100/102."""
    looks_like_batch(text)
    try:
        batch = split_batch(text)
    except HL7Error as error:
        assert error.code in (100, 102)
        return
    assert all(message.startswith("MSH") for message in batch.messages)


MESSAGES = st.lists(
    st.builds(
        lambda control_id, segments: "\r".join(
            [f"MSH|^~\\&|A|B|C|D|2026||ADT^A01|{control_id}|P|2.5", *segments]
        ),
        st.integers(0, 10**6),
        st.lists(st.sampled_from(["PID|1||x^y", "PV1|1|I", "NTE|1||MSH|BHS", "OBX|1|ST|c||v"]), max_size=4),
    ),
    min_size=1,
    max_size=5,
)


@given(MESSAGES, st.sampled_from(["\r", "\n", "\r\n"]), st.booleans(), st.booleans())
def test_split_batch_recovers_the_messages_it_was_given(messages, ending, with_file, with_batch):
    """Messages wrapped in any envelope, with any line ending, come back exactly, in order."""
    parts = ([FHS] if with_file else []) + ([BHS] if with_batch else []) + messages
    parts += ([f"BTS|{len(messages)}"] if with_batch else []) + (["FTS|1"] if with_file else [])
    text = lines(*parts, ending=ending)
    assert looks_like_batch(text) == (with_file or with_batch or len(messages) > 1)
    batch = split_batch(text)
    assert batch.messages == tuple(messages)
    assert batch.declared_count == (len(messages) if with_batch else None)


# --- the corpus -----------------------------------------------------------------------------

# Message counts for batch files whose notes do not say 'N messages in file' (read from the files).
COUNTS_NOT_IN_NOTES = {
    "batch/pyhl7_sample_batch.hl7": 1,
    "batch/pyhl7_sample_batch3.hl7": 1,
    "batch/pyhl7_sample_batch4.hl7": 1,
    "batch/pyhl7_sample_file.hl7": 1,
    "batch/pyhl7_sample_file3.hl7": 1,
    "batch/pyhl7_sample_file4.hl7": 1,
    "batch/rubyhl7_empty_batch.hl7": 0,
    "batch/oie_test_hl7_batch_input.hl7": 1,
    "batch/cdcti_005_al_oru_fhs_bhs_no_trailers.hl7": 1,
    "batch/nodehl7_batch.hl7": 1,
}
BATCH_ENTRIES = [entry for entry in corpus_entries() if entry.expect == "batch"]


def test_every_corpus_batch_has_a_known_count():
    """Each batch file's count comes from its notes or from the table above, not both."""
    from_notes = {entry.file for entry in BATCH_ENTRIES if entry.messages_in_file is not None}
    assert from_notes.isdisjoint(COUNTS_NOT_IN_NOTES)
    assert from_notes | set(COUNTS_NOT_IN_NOTES) == {entry.file for entry in BATCH_ENTRIES}


@pytest.mark.parametrize("entry", BATCH_ENTRIES, ids=lambda entry: entry.file)
def test_corpus_batches_split_into_acceptable_messages(entry):
    """Each batch file looks like a batch and splits into the stated number of messages.

    Each message has an acceptable header.
    """
    text = decode(entry.path.read_bytes()).text
    expected = (
        entry.messages_in_file if entry.messages_in_file is not None else COUNTS_NOT_IN_NOTES[entry.file]
    )
    assert looks_like_batch(text)
    batch = split_batch(text)
    assert len(batch.messages) == expected
    for message in batch.messages:
        assert validate_header(read_header(message)) == []


@pytest.mark.parametrize(
    "entry",
    [e for e in corpus_entries() if e.expect == "AR" and ("batch" in e.file or "file" in e.file)],
    ids=lambda entry: entry.file,
)
def test_corpus_bad_batches_do_not_split(entry):
    """Every AR batch or file in the corpus looks like a batch and split_batch rejects it."""
    text = decode(entry.path.read_bytes()).text
    assert looks_like_batch(text)
    with pytest.raises(HL7Error) as raised:
        split_batch(text)
    assert raised.value.code in (100, 102)


def test_corpus_bts_without_bhs_is_a_batch():
    """pyhl7_sample_batch4 (MSH..BTS, no BHS) looks like a batch: its one message, BTS-1 counted."""
    entry = next(e for e in corpus_entries() if e.file == "batch/pyhl7_sample_batch4.hl7")
    text = decode(entry.path.read_bytes()).text
    assert looks_like_batch(text)
    batch = split_batch(text)
    assert (len(batch.messages), batch.batch_header, batch.declared_count) == (1, None, 1)
    assert batch.messages[0].startswith(
        "MSH|^~\\&||ABCHS||AUSDHSV|20070101112951||ADT^A04^ADT_A01|12334456778890|"
    )


def test_corpus_trailing_fts_alone_is_not_a_batch():
    """pipehat_v23_oru_r01_3 is a single message, not a batch.

    It ends with a stray 'FTS|1|END OF FILE' and has no FHS/BHS/BTS.
    """
    entry = next(e for e in corpus_entries() if e.file == "oru/pipehat_v23_oru_r01_3.hl7")
    text = decode(entry.path.read_bytes()).text
    assert "\rFTS|1|END OF FILE" in text
    assert not looks_like_batch(text)
    assert validate_header(read_header(text)) == []
