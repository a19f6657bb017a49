"""HL7 date/time (DTM, and TS before it): one parser, its readings, and one formatter.

A DTM is ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. ``parse_dtm`` reads it the way the
standard writes it, for filters and transforms: the moment, how precisely it was written and
whether it had an offset; ``format_dtm`` writes such a value back. The record reads times and
dates more loosely (``parse_timestamp``, ``parse_partial_date``): what a sender wrote is kept when
it can be read at all. ACKs and batch headers carry the current time (``hl7_timestamp``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache

__all__ = ["HL7DateTime", "format_dtm", "hl7_timestamp", "parse_dtm", "parse_partial_date", "parse_timestamp"]

# \d is any decimal digit: the record reads them all; parse_dtm takes ASCII digits only.
_DTM = re.compile(r"(\d{4}(?:\d{2}){0,5})(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?")


@dataclass(frozen=True, slots=True)
class HL7DateTime:
    """An HL7 DTM value: the moment (aware when an offset was given) and how precisely it was written."""

    value: datetime
    digits: int  # 4 (year), 6, 8, 10, 12 or 14 (seconds)
    fraction_digits: int = 0  # 0 to 4 digits after the seconds
    has_offset: bool = False


def parse_dtm(text: str) -> HL7DateTime | None:
    """Read ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``; None when ``text`` is not such a date/time."""
    read = _parse(text, strict=True, zone=None)
    if read is None:
        return None
    value, digits, fraction, has_offset = read
    return HL7DateTime(value, len(digits), len(fraction or ""), has_offset)


@lru_cache(maxsize=4096)  # a message repeats its times (OBX-14 of every result), and a feed its senders'
def parse_timestamp(text: str, local: tzinfo) -> datetime | None:
    """The record's reading of a TS/DTM field: an aware datetime, or None when unreadable.

    Only the first subcomponent counts and blanks around it are ignored. Without an offset the
    time is read in ``local``; a date alone means its midnight. Looser than ``parse_dtm``: any
    decimal digits, a fraction after fewer digits than the seconds, any two-digit offset hours
    and minutes (an offset of a day or more raises ValueError, as ``datetime.timezone`` does).
    """
    read = _parse(text.strip().split("&", 1)[0], strict=False, zone=local)
    return None if read is None else read[0]


@lru_cache(maxsize=4096)  # birth dates, and the dates of a feed's allergies and coverages, repeat
def parse_partial_date(text: str) -> str | None:
    """An HL7 date (or the date part of a TS) as ISO text of its precision; None when unreadable.

    The precision is the one written: ``1980``, ``1980-05`` or ``1980-05-17``.
    """
    head = text.strip()[:8]
    if not head.isdigit() or _parse(head, strict=False, zone=None) is None:
        return None
    return "-".join(part for part in (head[:4], head[4:6], head[6:8]) if part)


def _parse(text: str, *, strict: bool, zone: tzinfo | None) -> tuple[datetime, str, str | None, bool] | None:
    """The one DTM parser: (the moment, its digits, its fraction digits, whether it had an offset).

    ``zone`` is the time zone of a value without offset (None: naive). A tuple rather than an
    HL7DateTime: the record's reading, on its hot path, needs only the moment.
    """
    match = _DTM.fullmatch(text)
    if match is None:
        return None
    digits, fraction, sign, offset_hours, offset_minutes = match.groups()
    if strict and (fraction is not None and len(digits) != 14 or not text.isascii()):
        return None
    if sign is not None:
        zone = _zone(sign, offset_hours, offset_minutes, strict)
        if zone is None:
            return None
    try:
        value = datetime(
            int(digits[0:4]), int(digits[4:6] or 1), int(digits[6:8] or 1),
            int(digits[8:10] or 0), int(digits[10:12] or 0), int(digits[12:14] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0, zone,
        )  # fmt: skip
    except ValueError:  # month 13, February 30, year 0000 ...
        return None
    return value, digits, fraction, sign is not None


@lru_cache(maxsize=128)
def _zone(sign: str, hours: str, minutes: str, strict: bool) -> timezone | None:
    """The zone of an offset; strictly read, None past 23 hours or 59 minutes."""
    if strict and (int(hours) > 23 or int(minutes) > 59):
        return None
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if sign == "-" else offset)


def format_dtm(moment: HL7DateTime) -> str:
    """Write a DTM value with the precision it was read with."""
    value = moment.value
    text = (
        f"{value.year:04d}{value.month:02d}{value.day:02d}"
        f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
    )[: moment.digits]
    if moment.fraction_digits:
        text += "." + f"{value.microsecond:06d}"[: moment.fraction_digits]
    offset = value.utcoffset() if moment.has_offset else None
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        text += f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text


def hl7_timestamp(moment: datetime) -> str:
    """``moment`` to the second with its UTC offset, e.g. 20261127044400+0000 (no offset when naive)."""
    # Every ACK carries one and the text only changes once a second: a cache lookup instead of formatting,
    # keyed by the fields (hashing an aware datetime, or making one without its microseconds, costs more).
    return _to_the_second(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.tzinfo,
        moment.fold,
    )


@lru_cache(maxsize=4)
def _to_the_second(
    year: int, month: int, day: int, hour: int, minute: int, second: int, zone: tzinfo | None, fold: int
) -> str:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)
    return format_dtm(HL7DateTime(moment, 14, 0, True))
