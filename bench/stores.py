"""The engine's store as the benchmark sees it: counts read during and after a row.

It also makes the PostgreSQL databases per row.

``StoreProbe`` reads through plain SQL on the engine's tables (SQLite or PostgreSQL, whichever
URL the engine ran on), so it works on the store of any engine revision the benchmark runs.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.pool import NullPool

_POSTGRES_CONNECT_TIMEOUT = 3


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite store file."""
    return f"sqlite:///{path}"


class StoreProbe:
    """Counts in an engine's store.

    Every call opens and closes its own connection (no long read holds the WAL).
    """

    def __init__(self, url: str):
        self._engine = sa.create_engine(url, poolclass=NullPool)
        database = self._engine.url.database
        if self._engine.dialect.name == "sqlite" and database:
            # Revisions from 0025 keep the patient record in a file of their own beside the store's.
            record = Path(database).with_name(f"{Path(database).stem}-record{Path(database).suffix}")

            @sa.event.listens_for(self._engine, "connect")
            def _attach_record(dbapi_connection, _record) -> None:
                if record.exists():
                    dbapi_connection.execute("ATTACH DATABASE ? AS record", (str(record),))

    def close(self) -> None:
        self._engine.dispose()

    def _scalar(self, sql: str, **params) -> int:
        with self._engine.connect() as connection:
            return connection.execute(sa.text(sql), params).scalar_one()

    def stored(self, *, after_id: int = 0) -> int:
        """Messages stored with an id above ``after_id`` (a pre-filled store holds ids up to its size)."""
        return self._scalar("SELECT count(*) FROM messages WHERE id > :after_id", after_id=after_id)

    def unprocessed(self, *, after_id: int = 0) -> int:
        """Messages still RECEIVED: stored, not yet through their channel."""
        return self._scalar(
            "SELECT count(*) FROM messages WHERE status = 'RECEIVED' AND id > :after_id", after_id=after_id
        )

    def deliveries(self, channel: str, destination: str | None) -> dict[str, int]:
        """Current (not superseded) deliveries to one destination (None: all of the channel), by status."""
        sql = (
            "SELECT status, count(*) FROM deliveries WHERE channel = :channel"
            + (" AND destination = :destination" if destination is not None else "")
            + " AND superseded_at IS NULL GROUP BY status"
        )
        with self._engine.connect() as connection:
            return dict(
                connection.execute(sa.text(sql), {"channel": channel, "destination": destination})
                .tuples()
                .all()
            )

    def sent_in_order(self, channel: str, destination: str) -> list[str]:
        """Control ids of the SENT deliveries to one destination, in the order of their messages' ids."""
        sql = (
            "SELECT control_id FROM deliveries WHERE channel = :channel AND destination = :destination"
            " AND status = 'SENT' AND superseded_at IS NULL ORDER BY message_id, id"
        )
        with self._engine.connect() as connection:
            return list(
                connection.execute(sa.text(sql), {"channel": channel, "destination": destination}).scalars()
            )

    def record_counts(self) -> dict[str, int]:
        """Persons (patients not merged away), all patient rows, and identifiers in the patient record."""
        return {
            "persons": self._scalar("SELECT count(*) FROM record_patients WHERE merged_into_id IS NULL"),
            "patient_rows": self._scalar("SELECT count(*) FROM record_patients"),
            "identifiers": self._scalar("SELECT count(*) FROM record_identifiers"),
        }


def probe(url: str) -> contextlib.closing[StoreProbe]:
    """A StoreProbe on ``url``, for a ``with`` block that disposes of it."""
    return contextlib.closing(StoreProbe(url))


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database made for one row."""

    name: str
    url: str  # for the engine's config: postgresql+psycopg://...


def _admin_url(server: str) -> str:
    return f"{server.rstrip('/')}/postgres?connect_timeout={_POSTGRES_CONNECT_TIMEOUT}"


def postgres_unreachable(server: str) -> str | None:
    """Why the PostgreSQL server cannot be used for the benchmark, or None when it can."""
    try:
        with psycopg.connect(_admin_url(server)):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at {server} is not reachable: {str(error).strip()}"


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[Database]:
    """CREATE DATABASE bench_<random> on the server; DROP it afterwards, also on failure.

    The DROP goes ahead with any connection left to it.
    """
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_url(server), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        address = server.rstrip("/").split("://", 1)[1]
        yield Database(name, f"postgresql+psycopg://{address}/{name}")
    finally:
        with psycopg.connect(_admin_url(server), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_exists(server: str, name: str) -> bool:
    """Whether a database of that name is on the server (to check that a row's database was dropped)."""
    with psycopg.connect(_admin_url(server)) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


class DeliveryWatch:
    """One destination's progress at the window's edges, then a bounded wait for the rest to be delivered.

    With ``destination`` None, every destination of the channel together.

    Its ``on_window`` goes to ``measure``: at the start and the end of the window it counts the
    destination's SENT deliveries and what is still waiting (messages not yet processed,
    deliveries QUEUED); after the end it waits, up to ``drain_seconds``, until nothing waits.
    """

    POLL_SECONDS = 0.25

    def __init__(
        self, url: str, channel: str, destination: str | None, drain_seconds: float, *, after_id: int = 0
    ):
        self.url = url
        self.channel = channel
        self.destination = destination
        self.drain_seconds = drain_seconds
        self.after_id = after_id
        self.times: dict[str, float] = {}
        self.sent: dict[str, int] = {}
        self.waiting: dict[str, tuple[int, int]] = {}  # phase -> (unprocessed, queued)
        self.drained_after: float | None = (
            None  # seconds after the window's end; None: not within drain_seconds
        )

    def _sample(self, store: StoreProbe, phase: str) -> tuple[int, int]:
        counts = store.deliveries(self.channel, self.destination)
        self.times[phase] = time.monotonic()
        self.sent[phase] = counts.get("SENT", 0)
        self.waiting[phase] = (store.unprocessed(after_id=self.after_id), counts.get("QUEUED", 0))
        return self.waiting[phase]

    def on_window(self, phase: str, _server) -> None:
        with probe(self.url) as store:
            waiting = self._sample(store, phase)
            if phase != "end":
                return
            deadline = self.times["end"] + self.drain_seconds
            while any(waiting) and time.monotonic() < deadline:
                time.sleep(self.POLL_SECONDS)
                waiting = self._sample(store, "drained")
            if not any(waiting):
                self.drained_after = self.times.get("drained", self.times["end"]) - self.times["end"]

    def figures(self) -> dict:
        """What it saw, for a row's ``observed``.

        The destination's SENT rate over the window, the backlog at its end, the drain.
        """
        if "end" not in self.times:
            return {}
        unprocessed, queued = self.waiting["end"]
        window = self.times["end"] - self.times["start"]
        return {
            "sent_rate_in_window": (self.sent["end"] - self.sent["start"]) / window if window > 0 else 0.0,
            "backlog_unprocessed": unprocessed,
            "backlog_queued": queued,
            "drained_after_seconds": self.drained_after,
            "drain_limit_seconds": self.drain_seconds,
            "left_after_drain": sum(self.waiting.get("drained", self.waiting["end"]))
            if self.drained_after is None
            else 0,
        }


def drain_figures(observed: dict) -> dict[str, str]:
    """A DeliveryWatch's backlog and drain, as report columns."""
    drained = observed["drained_after_seconds"]
    return {
        "waiting at window end (unprocessed + queued)": (
            f"{observed['backlog_unprocessed']:,} + {observed['backlog_queued']:,}"
        ),
        "drained after": f"{drained:.1f} s"
        if drained is not None
        else f"not in {observed['drain_limit_seconds']:g} s ({observed['left_after_drain']:,} left)",
    }
