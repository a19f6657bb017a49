"""Text as the database holds it: the one way every text value of the store and the record is fitted."""

from __future__ import annotations

import functools

import sqlalchemy as sa


def fit_text(value: str, length: int | None) -> str:
    """Text as the database holds it: lone surrogates as "?", no NULs, at most ``length`` characters.

    ``length`` None means any. A lone surrogate is a byte a charset could not decode. PostgreSQL
    refuses NULs in text and neither driver encodes a lone surrogate; a value is cut rather than
    refused, so SQLite (which does not enforce lengths) and PostgreSQL hold the same.
    """
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value if length is None else value[:length]


def fit_row(table: sa.Table, values: dict) -> dict:
    """``values`` with each text of a text column of ``table`` through fit_text."""
    fitted = dict(values)
    for name, length in text_columns(table).items():
        value = fitted.get(name)
        if isinstance(value, str):
            fitted[name] = fit_text(value, length)
    return fitted


@functools.cache
def text_columns(table: sa.Table) -> dict[str, int | None]:
    """The text columns of ``table`` and their lengths (None for unbounded Text)."""
    return {c.name: c.type.length for c in table.c if isinstance(c.type, sa.String)}
