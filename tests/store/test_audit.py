"""engine/store/audit.py: the audit trail's table, its writes (fitted, aware) and its reads, newest first."""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.errors import StoreError
from engine.store.audit import AuditEntry, AuditRepository
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.schema import metadata
from tests.fakes.messages import T0
from tests.fakes.store import schema_differences


def test_audit_migration_matches_the_table(store_url):
    """Revision 0004 creates audit_log exactly as engine.store.audit declares it."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    differences = schema_differences(engine)
    engine.dispose()
    about_audit = [d for d in differences if "audit_log" in repr(d)]
    assert about_audit == []
    assert "audit_log" in metadata.tables


def test_audit_repository_pages_newest_first(store_url):
    """recent() returns newest first, pages by before_id and filters by message or user."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    audit = AuditRepository(engine)
    ids = [
        audit.record(user=user, action="view", remote="127.0.0.1", message_id=n)
        for n, user in enumerate(["alice", "bob", "alice"], start=1)
    ]
    assert [e.id for e in audit.recent()] == ids[::-1]
    assert [e.id for e in audit.recent(1, before_id=ids[2])] == [ids[1]]
    assert [e.message_id for e in audit.recent(user="alice")] == [3, 1]
    assert [e.user for e in audit.recent(message_id=2)] == ["bob"]
    engine.dispose()


def test_an_entry_is_written_at_the_clocks_time_unless_given_one(engine):
    """``at`` defaults to the repository's clock; a naive ``at`` is refused; the entry reads back whole."""
    audit = AuditRepository(engine, clock=lambda: T0)
    first = audit.record(user="alice", action="login", remote="10.0.0.5")
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.record(user="alice", action="view", remote="10.0.0.5", at=datetime(2024, 3, 1, 12))
    assert audit.recent() == [AuditEntry(first, T0, "alice", "login", None, "10.0.0.5", "")]


def test_text_is_fitted_to_its_column(engine):
    """What a client typed (a user name) is stored fitted: NULs dropped, cut to the column's length."""
    audit = AuditRepository(engine, clock=lambda: T0)
    audit.record(user="mal\x00lory" + "y" * 500, action="login_failed", remote="10.0.0.5", detail="x\x00y")
    (entry,) = audit.recent()
    assert (entry.user, entry.detail) == ("mallory" + "y" * 93, "xy")  # user is VARCHAR(100)


def test_an_entry_as_json_has_its_time_in_iso_8601(engine):
    """to_json_dict gives every field, the time as ISO 8601 text."""
    entry = AuditEntry(7, T0, "alice", "resend", 42, "10.0.0.5", "destination=emr")
    assert entry.to_json_dict() == {
        "id": 7,
        "at": "2024-03-01T12:00:00+00:00",
        "user": "alice",
        "action": "resend",
        "message_id": 42,
        "remote": "10.0.0.5",
        "detail": "destination=emr",
    }


def test_a_limit_below_one_is_refused_and_a_missing_table_is_a_store_error(engine, tmp_path):
    """recent(0) is a ValueError when asked; a database without the audit table answers StoreError."""
    with pytest.raises(ValueError):
        AuditRepository(engine).recent(0)
    bare = create_engine_for(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        with pytest.raises(StoreError, match="reading the audit trail failed"):
            AuditRepository(bare).recent()
    finally:
        bare.dispose()
