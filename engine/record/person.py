"""What a person is to the record, said without its SQLAlchemy schema: the demographics, a name's key.

The apply (``engine.record.identity``, ``schema``) and the reads of either reader (``engine.record.view``)
share these; a command reading a SQLite store imports them without SQLAlchemy.
"""

from __future__ import annotations

import unicodedata

__all__ = ["DEMOGRAPHICS", "LISTS", "normalise"]

#: A patient's lists, tables ordered by position, each sent whole: names, addresses, telecoms, contacts.
LISTS = ("record_names", "record_addresses", "record_telecoms", "record_contacts")
#: A patient's demographics: its columns and lists (tables) from PID and NK1, each timed in ``sent_at``.
DEMOGRAPHICS = (
    "birth_date",
    "sex",
    "language",
    "marital_status",
    "ssn",
    "deceased_at",
    "deceased",
    *LISTS,
)


# ASCII text is its own NFKD form, its casefold is its lower case, and its alphanumerics are these.
_ASCII_DROPPED = str.maketrans("", "", "".join(chr(code) for code in range(128) if not chr(code).isalnum()))


def normalise(text: str | None) -> str:
    """Case, accents, spaces and punctuation dropped: ``"O'Brien-Smith "`` and ``"obriensmith"`` are equal."""
    if not text:
        return ""
    if text.isascii():  # most names: the same result, without a test per character
        return text.lower().translate(_ASCII_DROPPED)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed.casefold() if char.isalnum())
