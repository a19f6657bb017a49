"""HL7 date/time: the strict DTM reading, the record's looser readings, and the ACK timestamp."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.hl7.dtm import (
    HL7DateTime,
    format_dtm,
    hl7_timestamp,
    parse_dtm,
    parse_partial_date,
    parse_timestamp,
)

NEW_YORK = ZoneInfo("America/New_York")


# --- the strict reading and its formatting ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024",
        "202402",
        "20240229",
        "2024022913",
        "202402291305",
        "20240229130559",
        "20240229130559.1",
        "20240229130559.1234-0330",
        "1999+0000",
    ],
)
def test_dtm_round_trips(text):
    """parse_dtm then format_dtm gives the text back at every precision."""
    moment = parse_dtm(text)
    assert moment is not None
    assert format_dtm(moment) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "199",
        "19990",
        "19991301",
        "20230229",
        "2024022924",
        "20240229130559.12345",
        "1999+2400",
        "1999 ",
        "19990101T10",
        "١٩٩٩",
    ],
)
def test_dtm_rejects_what_is_not_a_date_time(text):
    """parse_dtm answers None for wrong lengths, impossible dates and offsets, and other formats."""
    assert parse_dtm(text) is None


def test_dtm_reads_the_offset():
    """A DTM with an offset is an aware datetime; the digits say how precise it was."""
    moment = parse_dtm("202402291305-0330")
    assert moment == HL7DateTime(moment.value, 12, 0, True)
    assert moment.value.utcoffset().total_seconds() == -(3 * 3600 + 30 * 60)


# --- the record's readings ------------------------------------------------------------------------


def test_a_timestamp_without_offset_is_read_in_the_local_zone():
    """No offset: the wall-clock time in the zone given; a date alone is its midnight there."""
    assert parse_timestamp("202403011200", NEW_YORK) == datetime(2024, 3, 1, 12, tzinfo=NEW_YORK)
    assert parse_timestamp("20240301", NEW_YORK) == datetime(2024, 3, 1, tzinfo=NEW_YORK)
    assert parse_timestamp("2024", UTC) == datetime(2024, 1, 1, tzinfo=UTC)


def test_a_timestamp_with_offset_is_that_instant():
    """An offset wins over the local zone; fractions of a second are read to four digits."""
    moment = parse_timestamp("20240301120000.25-0330", NEW_YORK)
    assert moment == datetime(2024, 3, 1, 15, 30, 0, 250000, tzinfo=UTC)
    assert moment.utcoffset() == -timedelta(hours=3, minutes=30)


def test_a_timestamp_is_read_from_its_first_subcomponent_without_blanks():
    """A TS written as DTM&precision (before 2.6), and blanks around the value, read as the DTM alone."""
    assert parse_timestamp(" 202403011200&M ", UTC) == datetime(2024, 3, 1, 12, tzinfo=UTC)


def test_the_record_reads_more_loosely_than_the_standard_writes():
    """Any decimal digits, a fraction after fewer digits than the seconds, offset minutes past 59."""
    assert parse_timestamp("٢٠٢٤٠٣٠١", UTC) == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_timestamp("202403011200.5", UTC) == datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert parse_timestamp("2024+0099", UTC).utcoffset() == timedelta(hours=1, minutes=39)
    for strict_only in ("٢٠٢٤٠٣٠١", "202403011200.5", "2024+0099"):
        assert parse_dtm(strict_only) is None


def test_an_offset_of_a_day_or_more_raises():
    """As it always has: datetime.timezone refuses the offset (the record refuses that message)."""
    with pytest.raises(ValueError):
        parse_timestamp("2024+2400", UTC)


@pytest.mark.parametrize("text", ["", "2024030112xx", "20241301", "20230229", "202403011", "2024 03"])
def test_an_unreadable_timestamp_is_none(text):
    """Wrong lengths, impossible dates and other formats give None."""
    assert parse_timestamp(text, UTC) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1980", "1980"),
        ("198005", "1980-05"),
        ("19800517", "1980-05-17"),
        (" 19800517123000+0100", "1980-05-17"),
        ("19800517xyz", "1980-05-17"),
        ("١٩٨٠", "١٩٨٠"),
        ("1980051", None),
        ("19801301", None),
        ("19800230", None),
        ("1980.5", None),
        ("", None),
    ],
)
def test_a_partial_date_keeps_its_precision(text, expected):
    """The first eight characters as a date of year, month or day precision, written as ISO text."""
    assert parse_partial_date(text) == expected


# --- the ACK timestamp ----------------------------------------------------------------------------


def test_the_ack_timestamp_is_to_the_second_with_its_offset():
    """Seconds and UTC offset, microseconds dropped; a naive time has no offset."""
    assert hl7_timestamp(datetime(2026, 11, 27, 4, 44, 0, 999999, tzinfo=UTC)) == "20261127044400+0000"
    minus = timezone(-timedelta(hours=3, minutes=30))
    assert hl7_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=minus)) == "20260102030405-0330"
    assert hl7_timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "20260102030405"


def test_the_ack_timestamp_of_a_repeated_hour_follows_its_fold():
    """The same wall-clock second twice as the clocks go back: each with its own offset, cached or not."""
    berlin = ZoneInfo("Europe/Berlin")
    for _ in range(2):
        assert hl7_timestamp(datetime(2026, 10, 25, 2, 30, 0, tzinfo=berlin)) == "20261025023000+0200"
        assert hl7_timestamp(datetime(2026, 10, 25, 2, 30, 0, fold=1, tzinfo=berlin)) == "20261025023000+0100"


# --- against the readings as they were before engine.hl7.dtm --------------------------------------
#
# The three implementations this module replaced, kept verbatim as the reference: every reading
# gives what it gave before, on any text.

_OLD_DTM = re.compile(r"([0-9]{4}(?:[0-9]{2}){0,5})(?:\.([0-9]{1,4}))?(?:([+-])([0-9]{2})([0-9]{2}))?")
_OLD_TIMESTAMP = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")


def _old_parse_dtm(text: str) -> HL7DateTime | None:
    match = _OLD_DTM.fullmatch(text)
    if match is None:
        return None
    digits, fraction, sign, offset_hours, offset_minutes = match.groups()
    if fraction is not None and len(digits) != 14:
        return None
    zone = None
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        value = datetime(
            int(digits[0:4]), int(digits[4:6] or 1), int(digits[6:8] or 1),
            int(digits[8:10] or 0), int(digits[10:12] or 0), int(digits[12:14] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0, zone,
        )  # fmt: skip
    except ValueError:
        return None
    return HL7DateTime(value, len(digits), len(fraction or ""), zone is not None)


def _old_format_dtm(moment: HL7DateTime) -> str:
    value = moment.value
    text = f"{value.year:04d}{value.month:02d}{value.day:02d}"
    text = (text + f"{value.hour:02d}{value.minute:02d}{value.second:02d}")[: moment.digits]
    if moment.fraction_digits:
        text += "." + f"{value.microsecond:06d}"[: moment.fraction_digits]
    if moment.has_offset and value.tzinfo is not None:
        minutes = int(value.utcoffset().total_seconds() // 60)
        text += f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text


def _old_parse_timestamp(text: str, local: tzinfo) -> datetime | None:
    match = _OLD_TIMESTAMP.fullmatch(text.strip().split("&", 1)[0])
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    zone = local
    if offset:
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        return datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]), tzinfo=zone,
        )  # fmt: skip
    except ValueError:
        return None


def _old_parse_partial_date(text: str) -> str | None:
    digits = text.strip()[:8]
    if not digits.isdigit() or len(digits) not in (4, 6, 8):
        return None
    try:
        date(int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1))
    except ValueError:
        return None
    return "-".join(part for part in (digits[:4], digits[4:6], digits[6:8]) if part)


def _old_hl7_timestamp(moment: datetime) -> str:
    return _old_timestamp_text(moment.replace(microsecond=0))


@lru_cache(maxsize=4)  # as before: the same cache gives the same answers
def _old_timestamp_text(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _outcome(read, *args):
    """What a reading gives: its value, or the type of what it raised."""
    try:
        return read(*args)
    except ValueError as error:
        return type(error)


# Texts shaped like a DTM (digits, maybe a fraction, maybe an offset, each of a right or wrong
# length), and texts of pieces that make dates, offsets, separators and foreign digits meet.
_SHAPED = st.from_regex(r"[0-9]{2,16}(\.[0-9]{1,5})?([+-][0-9]{3,5})?", fullmatch=True)
_PIECES = ["19", "20", "24", "02", "29", "12", "31", "00", "59", "60", "99", "1", "0"]
_PIECES += [".", "+", "-", "&", " ", "\u0663", "\u00b2", "T", "x"]  # ٣ (Arabic-Indic 3), ² (superscript 2)
TEXTS = st.one_of(_SHAPED, st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))


@settings(max_examples=2000, deadline=None)
@given(TEXTS)
@example("20240229130559.1234-0330")
@example("2024+2400")
@example("١٩٩٩")
def test_parse_dtm_reads_as_before(text):
    """The strict reading and its formatting give what the transforms' own parser gave."""
    moment = parse_dtm(text)
    assert moment == _old_parse_dtm(text)
    if moment is not None:
        assert format_dtm(moment) == _old_format_dtm(moment) == text


@settings(max_examples=2000, deadline=None)
@given(TEXTS, st.sampled_from([UTC, NEW_YORK, timezone(timedelta(hours=5, minutes=45))]))
@example(" 20240301&L", UTC)
@example("2024+2400", UTC)
@example("٢٠٢٤.٥", NEW_YORK)
def test_the_record_readings_read_as_before(text, local):
    """parse_timestamp and parse_partial_date give what the record's own parsers gave, raising included."""
    new, old = _outcome(parse_timestamp, text, local), _outcome(_old_parse_timestamp, text, local)
    assert new == old
    if isinstance(new, datetime):
        assert (new.tzinfo, new.utcoffset()) == (old.tzinfo, old.utcoffset())
    assert parse_partial_date(text) == _old_parse_partial_date(text)


@settings(max_examples=2000, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),
        timezones=st.one_of(
            st.none(),
            st.just(UTC),
            st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))),
        ),
    )
)
def test_the_ack_timestamp_is_written_as_before(moment):
    """hl7_timestamp gives what strftime gave, for any year from 1000 on and any whole-minute offset."""
    assert hl7_timestamp(moment) == _old_hl7_timestamp(moment)


def test_a_timestamp_is_read_in_the_timezone_asked_for_each_time():
    """parse_timestamp remembers per text and zone: the text in another zone, or with an offset, differs."""
    new_york = ZoneInfo("America/New_York")
    assert parse_timestamp("202403011200", UTC) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert parse_timestamp("202403011200", new_york) == datetime(2024, 3, 1, 17, tzinfo=UTC)
    assert parse_timestamp("202403011200", UTC) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert parse_timestamp("202403011200+0100", new_york) == datetime(2024, 3, 1, 11, tzinfo=UTC)
    assert parse_timestamp("2024030112xx", UTC) is None
