"""Fixtures of the channel tests."""

from __future__ import annotations

import pytest

from engine.channels.journal import Journals


@pytest.fixture
def journals(tmp_path) -> Journals:
    """Journals of destination queues in a fresh folder, without fsync (no reactor needed)."""
    return Journals(tmp_path / "journal", sync=False, reactor=None)
