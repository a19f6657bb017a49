"""What a message is found by in a content search: the words of the fields that name people and results.

The store indexes ``search_terms(text)`` when a message arrives and looks up ``query_terms(q)``.
Indexed: the patient's identifiers, name, birth date, address and account (PID-2/3/4/5/7/11/18/19),
a merged patient's identifiers (MRG-1/2/3/4/7), next of kin's names (NK1-2), the visit number
and doctors (PV1-7/8/17/19), order numbers and codes (ORC-2/3, OBR-2/3/4), observations' codes
and values (OBX-3/5), diagnoses (DG1-3) and allergens (AL1-3). Not the header (MSH), nor any
other segment: a search finds people and results, and a smaller index keeps intake fast.

A term is a run of letters and digits, lower-cased: ``SMITH^JOHN`` gives ``smith`` and ``john``,
``19800101`` stays one term, ``12-34`` gives ``12`` and ``34``.

``search_terms`` splits in Python (PostgreSQL's ``tsvector`` takes the terms as given);
``indexed_text`` hands SQLite's FTS5 the fields' text itself, which its ``unicode61`` tokenizer
splits the same way in C, unless the text is longer than ``MAX_TEXT`` (then the terms).
"""

from __future__ import annotations

import re
import string

__all__ = [
    "INDEXED_FIELDS",
    "MAX_TERM_LENGTH",
    "MAX_TERMS",
    "MAX_TEXT",
    "indexed_text",
    "query_terms",
    "search_terms",
]

INDEXED_FIELDS: dict[str, tuple[int, ...]] = {
    "PID": (2, 3, 4, 5, 7, 11, 18, 19),
    "MRG": (1, 2, 3, 4, 7),
    "NK1": (2,),
    "PV1": (7, 8, 17, 19),
    "ORC": (2, 3),
    "OBR": (2, 3, 4),
    "OBX": (3, 5),
    "DG1": (3,),
    "AL1": (3,),
}
MAX_TERMS = 300  # per message: a huge OBX-5 (a report) must not make one message's index row huge
MAX_TERM_LENGTH = 40
#: Indexed fields' text up to this long goes to FTS5 as it is (at most 1,000 words, a bounded row);
#: a longer one (a report) as its first MAX_TERMS distinct terms.
MAX_TEXT = 2000
_TERM = re.compile(r"[^\W_]+")
# An escape sequence (\F\, \X0D\, \.br\) is no word of the value.
_ESCAPE = re.compile(r"\\[^\\]{0,20}\\")


# ASCII text (most of it) is split by a translation and str.split: a third cheaper than the regex.
_ASCII_BREAKS = str.maketrans(dict.fromkeys(string.punctuation + string.whitespace, " "))


def _terms(text: str) -> list[str]:
    if "\\" in text:
        text = _ESCAPE.sub(" ", text)
    text = text.lower()
    words = text.translate(_ASCII_BREAKS).split() if text.isascii() else _TERM.findall(text)
    if max(map(len, words), default=0) <= MAX_TERM_LENGTH:  # most are: no copy of the list
        return words
    return [word[:MAX_TERM_LENGTH] for word in words]


def _picked(text: str) -> str:
    """The indexed fields of ER7 ``text``, space-separated, escape sequences blanked ('' for none).

    It runs for every message, so it splits only the indexed segments, on MSH-1: a full parse
    cost several times the insert itself.
    """
    text = text.lstrip("\ufeff")
    if not text.startswith("MSH") or len(text) < 4:
        return ""
    separator = text[3]
    picked = []
    for line in text.replace("\n", "\r").split("\r"):
        positions = INDEXED_FIELDS.get(line[:3])
        if positions is not None and line[3:4] == separator:
            fields = line.split(separator)
            picked += [fields[position] for position in positions if position < len(fields)]
    joined = " ".join(picked)
    return _ESCAPE.sub(" ", joined) if "\\" in joined else joined


def _distinct(picked: str) -> str:
    return " ".join(list(dict.fromkeys(_terms(picked)))[:MAX_TERMS])


def search_terms(text: str) -> str:
    """The distinct terms of the indexed fields of ER7 ``text``, space-separated ('' for none)."""
    return _distinct(_picked(text))


def indexed_text(text: str) -> str:
    """What FTS5 (unicode61) is given for ER7 ``text``: the indexed fields' text, or ``search_terms`` if long.

    FTS5 splits and folds case itself, and its index holds a term once a message whatever the
    count; what it finds is what ``search_terms`` would find, but the words past the
    ``MAX_TERMS``-th and the letters past ``MAX_TERM_LENGTH`` of a long word are kept too.
    """
    picked = _picked(text)
    return picked if len(picked) <= MAX_TEXT else _distinct(picked)


def query_terms(query: str) -> list[str]:
    """The terms of a search as typed: ``Smith, John`` -> ["smith", "john"] (each matches a term's start)."""
    return list(dict.fromkeys(_terms(query)))
