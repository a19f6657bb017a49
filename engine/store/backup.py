"""An online copy of the SQLite store, taken while the engine runs: ``hl7engine backup DEST``.

SQLite's backup API copies the file a step at a time from one snapshot (see
``driver.backup_sqlite``): every message committed (and so acknowledged) before the copy began is
in it, and in WAL mode the engine's commits go on meanwhile. The copy is written beside the
destination, checked with ``PRAGMA integrity_check``, and only then renamed into place, so a
file at DEST is always a whole, sound backup.

The patient record's own file (``engine-record.db``, engine.store.driver.record_attach) is copied
after it, to DEST's sibling (``copy.db`` -> ``copy-record.db``): every message the store's copy
shows delivered to the record (SENT) was applied before, so the record's copy holds it too. What
the record's copy holds of messages newer than the store's copy is forgotten in it
(``forget_newer_messages``): a store restored from the two gives those ids to new messages.
DEST is renamed into place last: where it is, its record's copy is too. A restore copies both.

A PostgreSQL store is refused: its own tools take consistent online copies (``pg_dump`` of the
database, or ``pg_basebackup`` of the server with its WAL for point-in-time recovery).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from engine.errors import StoreError
from engine.store.db import create_private, sqlite_file
from engine.store.driver import backup_sqlite, integrity_problems
from engine.store.driver.record_attach import forget_newer_messages, record_file

__all__ = ["Backup", "backup_source", "backup_store"]

#: Pages copied per step (4 KB pages: 8 MB), and the pause between steps that leaves the engine the disk.
STEP_PAGES = 2048
STEP_PAUSE_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where (the record's copy too, if the store has one), how large, how long it took."""

    path: Path
    size: int
    seconds: float
    record: Path | None = None


def backup_source(url: str) -> Path:
    """The file of a ``sqlite:///`` store URL; StoreError for any other store (PostgreSQL: use its tools)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        raise StoreError(
            "a PostgreSQL store is backed up with PostgreSQL's own tools: pg_dump (one database,"
            " consistent while the engine runs) or pg_basebackup (the whole server, with WAL archiving"
            " for point-in-time recovery)"
        )
    if (path := sqlite_file(parsed)) is None:
        raise StoreError(f"cannot back up the store at {parsed.render_as_string()}: not a SQLite file")
    return path


def backup_store(
    url: str,
    destination: Path,
    *,
    lock_timeout: float = 5.0,
    step_pages: int = STEP_PAGES,
    pause: float = STEP_PAUSE_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> Backup:
    """Copy the SQLite store at ``url`` to ``destination`` (which must not exist), then check the copy.

    ``progress(remaining, total)`` in pages after each step. StoreError when the store is not
    SQLite, the destination exists, or the copy fails or is not sound (nothing is left at DEST then).
    """
    source = backup_source(url)
    if not source.is_file():
        raise StoreError(f"no store at {source}")
    copies = [(source, destination)]
    if (record := record_file(source)).is_file():
        copies.append((record, record_file(destination)))
    for _, copy in copies:
        if copy.exists():
            raise StoreError(f"{copy} exists: give a new file, a backup never overwrites one")
    partials = [(original, copy, copy.with_name(copy.name + ".partial")) for original, copy in copies]
    started = time.monotonic()
    try:
        for original, _, partial in partials:
            partial.unlink(missing_ok=True)
            create_private(partial)  # patient data: readable by the engine's user only, as the store
            backup_sqlite(
                original, partial, pages=step_pages, pause=pause, lock_timeout=lock_timeout, progress=progress
            )
        if len(partials) > 1:
            forget_newer_messages(partials[1][2], partials[0][2])
        for _, _, partial in partials:
            if problems := integrity_problems(partial):
                raise StoreError(f"the copy failed its integrity check: {'; '.join(problems[:5])}")
        for _, copy, partial in reversed(partials):  # DEST last: where it is, its record's copy is
            os.replace(partial, copy)
    except (sqlite3.Error, OSError) as error:
        raise StoreError(f"backing up {source} failed: {error}") from error
    finally:
        for _, _, partial in partials:
            partial.unlink(missing_ok=True)
    size = sum(copy.stat().st_size for _, copy in copies)
    return Backup(destination, size, time.monotonic() - started, copies[1][1] if len(copies) > 1 else None)
