"""The history of applied configurations: when each was applied, from where, and what changed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from engine.model import require_aware
from engine.store.driver import fit_row, store_errors
from engine.store.schema import config_history


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """One configuration the engine applied."""

    id: int
    applied_at: datetime
    source: str  # where it came from, e.g. the path of channels.yaml
    sha256: str  # hex digest of content
    content: str  # the configuration text as applied
    changes: str  # what changed from the configuration applied before, for people
    # the files it read besides its own (CSV tables, python: modules): {kind, name, path, sha256}
    # each; None when recorded before the engine kept them
    inputs: list[dict[str, str]] | None


_COLUMNS = tuple(config_history.c[f.name] for f in dataclasses.fields(ConfigRecord))


class ConfigRepository:
    """Blocking reads and writes of the config history, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def record_config(
        self,
        *,
        applied_at: datetime,
        source: str,
        content: str,
        sha256: str,
        changes: str,
        inputs: Sequence[Mapping[str, str]] = (),
    ) -> int:
        """Remember that a configuration was applied; returns its id."""
        require_aware(applied_at, "applied_at")
        values = fit_row(
            config_history,
            {
                "applied_at": applied_at,
                "source": source,
                "content": content,
                "sha256": sha256,
                "changes": changes,
                "inputs": [dict(record) for record in inputs],
            },
        )
        with store_errors("recording a configuration"), self._engine.begin() as connection:
            return connection.execute(
                sa.insert(config_history).values(values).returning(config_history.c.id)
            ).scalar_one()

    def config_history(self, limit: int = 20, *, before_id: int | None = None) -> list[ConfigRecord]:
        """The configurations applied most recently, newest first, at most ``limit``, below ``before_id``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        c = config_history.c
        criteria = [] if before_id is None else [c.id < before_id]
        statement = sa.select(*_COLUMNS).where(*criteria).order_by(c.id.desc()).limit(limit)
        with store_errors("reading the configuration history"), self._engine.connect() as connection:
            return [ConfigRecord(**row._mapping) for row in connection.execute(statement)]

    def config_record(self, record_id: int) -> ConfigRecord | None:
        """One applied configuration by id, or None."""
        statement = sa.select(*_COLUMNS).where(config_history.c.id == record_id)
        with store_errors("reading the configuration history"), self._engine.connect() as connection:
            row = connection.execute(statement).one_or_none()
        return None if row is None else ConfigRecord(**row._mapping)
