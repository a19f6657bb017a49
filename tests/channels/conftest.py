"""Fixtures of the channel tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from engine.channels.journal import DeliveryJournal, Journals, StoreJournal
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.schema import queue_journals
from tests.fakes.channels import journal_lines


@pytest.fixture
def journals(tmp_path) -> Journals:
    """Journals of destination queues in a fresh folder, without fsync (no reactor needed)."""
    return Journals(tmp_path / "journal", sync=False, reactor=None)


@pytest.fixture(params=["file", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def kept(request, tmp_path) -> tuple[Journals, Callable[[DeliveryJournal | StoreJournal], list[list]]]:
    """Journals kept in files, or in a migrated store's queue_journals (SQLite, PostgreSQL), unsynced.

    With a function giving the entries a journal's lines hold where they are kept (file or row).
    """
    if request.param == "file":
        return Journals(tmp_path / "journal", sync=False, reactor=None), lambda journal: journal_lines(
            journal.path
        )
    url = request.getfixturevalue(f"{request.param}_url" if request.param == "sqlite" else "postgres_url")
    engine = create_engine_for(url)
    upgrade(engine)
    request.addfinalizer(engine.dispose)

    def row_lines(journal: StoreJournal) -> list[list]:
        with engine.connect() as connection:
            lines = connection.scalar(
                sa.select(queue_journals.c.lines).where(queue_journals.c.key == journal.key)
            )
        return [json.loads(line) for line in (lines or "").splitlines()]

    return Journals(tmp_path / "journal", sync=False, reactor=None, store_url=url), row_lines
