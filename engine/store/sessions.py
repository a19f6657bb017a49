"""Console sessions in the database, so that a restart does not log everyone out.

A session is found by the SHA-256 of its cookie's token: the table never holds a token that
could be sent back as a cookie. Expired sessions are deleted when they are next looked up and
at every login; a logout deletes its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from engine.model import require_aware
from engine.store.driver import fit_row, store_errors
from engine.store.schema import web_sessions

__all__ = ["SessionRepository", "StoredSession"]


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as stored: whose it is and until when it lives unless used."""

    user: str
    expires_at: datetime


class SessionRepository:
    """Blocking reads and writes of the sessions table, as plain data; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def open(self, *, token_sha256: str, user: str, now: datetime, expires_at: datetime) -> None:
        """Store a new session, and delete those that expired by ``now``."""
        require_aware(now, "now")
        values = fit_row(
            web_sessions,
            {"token_sha256": token_sha256, "user": user, "created_at": now, "expires_at": expires_at},
        )
        # TRANSACTION: the expired sessions go and the new one comes in together.
        with store_errors("opening a session"), self._engine.begin() as connection:
            connection.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
            connection.execute(sa.insert(web_sessions).values(values))

    def find(self, token_sha256: str) -> StoredSession | None:
        """The session of this token digest (live or expired), or None."""
        with store_errors("reading a session"), self._engine.connect() as connection:
            return _find(connection, token_sha256)

    def extend(self, token_sha256: str, expires_at: datetime) -> None:
        """Let a session live until ``expires_at``."""
        statement = (
            sa.update(web_sessions)
            .where(web_sessions.c.token_sha256 == token_sha256)
            .values(expires_at=expires_at)
        )
        with store_errors("extending a session"), self._engine.begin() as connection:
            connection.execute(statement)

    def close(self, token_sha256: str) -> StoredSession | None:
        """Delete a session; returns what it was, or None when there was none."""
        with store_errors("closing a session"), self._engine.begin() as connection:
            found = _find(connection, token_sha256)
            connection.execute(sa.delete(web_sessions).where(web_sessions.c.token_sha256 == token_sha256))
        return found

    def forget_expired(self, now: datetime) -> int:
        """Delete every session expired by ``now``; returns how many."""
        require_aware(now, "now")
        with store_errors("deleting expired sessions"), self._engine.begin() as connection:
            expired = sa.delete(web_sessions).where(web_sessions.c.expires_at <= now)
            return connection.execute(expired).rowcount


def _find(connection: sa.Connection, token_sha256: str) -> StoredSession | None:
    c = web_sessions.c
    row = connection.execute(sa.select(c.user, c.expires_at).where(c.token_sha256 == token_sha256)).first()
    return None if row is None else StoredSession(row.user, row.expires_at)
