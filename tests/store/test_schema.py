"""engine/store/schema.py: timestamps stored in UTC and read back aware, 64-bit ids, names the store keys by.

That the migrations make exactly these tables is tests/store/test_migrations.py's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.model import NAME_LENGTH
from engine.record import schema as record_schema  # noqa: F401  (its tables share the metadata)
from engine.store.schema import RowId, UTCDateTime, deliveries, messages, metadata
from tests.fakes.driver import item_rows, items
from tests.fakes.driver import metadata as driver_metadata


def test_a_time_in_any_offset_is_read_back_as_the_same_instant_in_utc(engine):
    """UTCDateTime writes UTC and reads an aware UTC datetime on both backends; None stays None."""
    driver_metadata.create_all(engine)
    east = datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with engine.begin() as connection:
        connection.execute(sa.insert(items), [{"name": "a", "count": 1, "at": east, "seen_at": None}])
    [(_, _, at, _, seen_at)] = item_rows(engine)
    assert (at, at.tzinfo, seen_at) == (datetime(2024, 3, 1, 18, 0, tzinfo=UTC), UTC, None)


def test_a_naive_time_is_refused(engine):
    """A naive datetime is ambiguous: writing one fails, naming it, and nothing is written."""
    driver_metadata.create_all(engine)
    with pytest.raises(sa.exc.StatementError, match="must be timezone-aware"):
        with engine.begin() as connection:
            connection.execute(sa.insert(items), [{"name": "a", "count": 1, "at": datetime(2024, 3, 1, 12)}])
    assert item_rows(engine) == []


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 7, 16, 9, 20, 898072, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still six digits of them
        datetime(5, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
def test_on_sqlite_a_time_is_written_as_sqlalchemys_datetime_writes_it(moment):
    """UTCDateTime's own SQLite processor gives the text SQLAlchemy's DATETIME gives the UTC time."""
    dialect = sqlite.dialect()
    written = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)(moment)
    as_sqlalchemy = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)(moment.astimezone(UTC))
    assert written == as_sqlalchemy


def test_ids_are_64_bit_except_on_sqlite_where_the_rowid_counts():
    """SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL ids are BIGINT."""
    assert (RowId.compile(dialect=sqlite.dialect()), RowId.compile(dialect=postgresql.dialect())) == (
        "INTEGER",
        "BIGINT",
    )


def test_the_names_a_queue_is_keyed_by_are_never_cut():
    """Channel and destination columns are as long as a name may be (engine.model.NAME_LENGTH)."""
    assert {messages.c.channel.type.length, deliveries.c.channel.type.length} == {NAME_LENGTH}
    assert deliveries.c.destination.type.length == NAME_LENGTH


def test_indexes_are_named_by_the_convention():
    """Every index is named ix_<table>_<columns>, so a migration can name the one it drops."""
    for table in metadata.tables.values():
        for index in table.indexes:
            columns = "_".join(column.name for column in index.columns)
            assert index.name == f"ix_{table.name}_{columns}", index
