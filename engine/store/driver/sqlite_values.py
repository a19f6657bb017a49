"""Timestamps as SQLAlchemy's SQLite dialect stores them, read and written with the stdlib alone.

A ``UTCDateTime`` column (``engine.store.schema``) holds UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``
on SQLite; the stdlib readers (``sqlite_reads``, ``record_reads``) read it as an aware UTC
datetime, as SQLAlchemy does, and compare with bounds written the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.model import require_aware

__all__ = ["read_time", "stored_time"]


def read_time(text: str | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (as engine.store.schema.UTCDateTime reads it)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_time(moment: datetime) -> str:
    """An aware datetime as a stored timestamp is written (UTC, SQLAlchemy's SQLite format), to compare."""
    require_aware(moment, "a stored timestamp")
    t = moment.astimezone(UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
        f" {t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}"
    )
