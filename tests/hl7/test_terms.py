"""engine/hl7/terms.py: the words a message is found by, and the words of a search."""

from __future__ import annotations

from engine.hl7.terms import MAX_TERMS, query_terms, search_terms

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
