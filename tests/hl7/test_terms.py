"""engine/hl7/terms.py: the words a message is found by, and the words of a search."""

from __future__ import annotations

import contextlib
import sqlite3

from engine.hl7.charset import decode
from engine.hl7.terms import MAX_TERM_LENGTH, MAX_TERMS, MAX_TEXT, indexed_text, query_terms, search_terms
from tests.fakes.corpus import corpus_entries

_ORU = (
    "MSH|^~\\&|LIS|NORTH|EHR|SOUTH|20260101120000||ORU^R01|R1|P|2.5.1\r"
    "PID|1||MRN-77^^^HOSP^MR||Ölmez^Zoë\\S\\X||19800101|F\r"
    "PV1|1|I|W1\r"
    "OBX|1|ST|GLU^Glucose||Positive \\F\\ high|mmol/L\r"
    "NTE|1||a note nobody searches\n"
)


def test_names_identifiers_birth_dates_and_observations_are_the_terms():
    """Indexed fields become lower-case words, once each; escapes, the header and other segments do not."""
    assert search_terms(_ORU) == "mrn 77 hosp mr ölmez zoë x 19800101 glu glucose positive high"


def test_a_huge_value_gives_at_most_max_terms():
    """A long report in OBX-5 cannot make one message's index row unbounded."""
    words = " ".join(f"w{n}" for n in range(MAX_TERMS * 2))
    terms = search_terms(f"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rOBX|1|TX|X||{words}\r").split()
    assert terms == ["x", *(f"w{n}" for n in range(MAX_TERMS - 1))]  # OBX-3 first


def test_what_is_no_message_has_no_terms():
    """Text without an MSH gives nothing to index."""
    assert search_terms("PID|1||123") == search_terms("") == ""


def test_a_search_is_split_like_the_content():
    """Punctuation separates words and case does not count; a word is asked once."""
    assert query_terms("Smith, John SMITH") == ["smith", "john"]
    assert query_terms(" ^~ ") == []


def _fts5_terms(texts: list[str]) -> list[set[str]]:
    """The terms SQLite's FTS5 (the content index's tokenizer) keeps for each of ``texts``."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE VIRTUAL TABLE t USING fts5(terms, tokenize = 'unicode61 remove_diacritics 2')")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        db.executemany("INSERT INTO t(rowid, terms) VALUES (?, ?)", enumerate(texts))
        found: list[set[str]] = [set() for _ in texts]
        for rowid, term in db.execute("SELECT doc, term FROM v"):
            found[rowid].add(term)
    return found


def test_fts5_given_the_fields_text_keeps_the_terms_python_splits_on_the_corpus():
    """On each corpus message FTS5 keeps from indexed_text search_terms' terms (whole, past the caps)."""
    texts = [decode(entry.path.read_bytes()).text for entry in corpus_entries()]
    given = _fts5_terms([indexed_text(t) for t in texts])
    split = _fts5_terms([search_terms(t) for t in texts])
    compared = 0
    for text, fts5, python in zip(texts, given, split, strict=True):
        assert {term[:MAX_TERM_LENGTH] for term in fts5} >= python, text[:60]
        if len(python) < MAX_TERMS:  # the 300-term cap did not bind: nothing more either
            assert {term[:MAX_TERM_LENGTH] for term in fts5} == python, text[:60]
            compared += bool(python)
    assert compared > 100


def test_escapes_long_words_and_many_words_in_the_text_fts5_is_given():
    """Escapes are blanked; long words and words past MAX_TERMS stay; a text past MAX_TEXT gives the terms."""
    header = "MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\r"
    assert indexed_text(_ORU) == " MRN-77^^^HOSP^MR  Ölmez^Zoë X 19800101 GLU^Glucose Positive   high"
    many = " ".join(f"w{n}" for n in range(MAX_TERMS + 10))
    assert indexed_text(f"{header}OBX|1|TX|X||{many}\r") == f"X {many}"
    long_word = "a" * (MAX_TERM_LENGTH + 5)
    assert indexed_text(f"{header}OBX|1|TX|X||{long_word}\r") == f"X {long_word}"
    report = "w " * MAX_TEXT
    assert indexed_text(f"{header}OBX|1|TX|X||{report}\r") == "x w"
    assert indexed_text("PID|1||123") == ""
