"""Retention: the content of messages older than their channel's retention is removed; the rows stay.

A pruned message keeps every column operators search and count by (type, control id, sender,
times, status, patient id, our ACK) and its deliveries and events; its raw bytes become empty,
its transformed content and its deliveries' payloads and answers NULL, and ``pruned_at`` says
when. Only messages whose processing is over are pruned (REJECTED, FILTERED, TRANSFORMED,
SENT, ERROR): a RECEIVED or QUEUED message still needs its content.

``RetentionRepository`` blocks (threads and the CLI). Each ``prune_batch`` is one short
transaction, so a running engine's intake waits for one batch at most; on SQLite
``give_back_space`` then hands the freed pages back to the file system, a step at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.model import Status, require_aware, utc_now
from engine.store.driver import (
    AUTO_VACUUM_INCREMENTAL,
    FileSpace,
    checkpoint_wal,
    file_space,
    foreign_keys_off,
    incremental_vacuum,
    repack_rows,
    store_errors,
    vacuum_postgresql,
    vacuum_to_incremental,
)
from engine.store.driver.record_attach import RECORD_SCHEMA, attached
from engine.store.schema import deliveries, messages

__all__ = [
    "FINAL_STATUSES",
    "PruneSummary",
    "PruneTarget",
    "Pruned",
    "RetentionPolicy",
    "RetentionRepository",
]

#: The statuses of a message whose processing is over: only such messages are pruned.
FINAL_STATUSES = (Status.REJECTED, Status.FILTERED, Status.TRANSFORMED, Status.SENT, Status.ERROR)
_FINAL = [str(status) for status in FINAL_STATUSES]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many days each channel's content is kept; ``default_days`` for every other (None: forever).

    The default also covers messages no channel took (``channel`` NULL: rejected ones) and
    channels that are no longer configured.
    """

    channels: Mapping[str, int] = field(default_factory=dict)
    default_days: int | None = None

    def __post_init__(self) -> None:
        for days in (*self.channels.values(), self.default_days):
            if days is not None and days < 1:
                raise ValueError(f"retention days must be at least 1, not {days}")

    @property
    def prunes_anything(self) -> bool:
        """Whether any channel (or the default) has a retention."""
        return bool(self.channels) or self.default_days is not None

    def days_for(self, channel: str | None) -> int | None:
        """The days a channel's content is kept (None: forever); ``None`` names the messages of no channel."""
        if channel is None:
            return self.default_days
        return self.channels.get(channel, self.default_days)


@dataclass(frozen=True, slots=True)
class PruneTarget:
    """The messages of one channel (None: of none) received before ``cutoff``."""

    channel: str | None
    cutoff: datetime

    def __post_init__(self) -> None:
        require_aware(self.cutoff, "cutoff")

    @property
    def label(self) -> str:
        """The channel's name, or what a message of no channel is."""
        return self.channel if self.channel is not None else "(no channel)"


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many messages a batch (or a whole target) pruned, and the bytes of content they held."""

    messages: int = 0
    content_bytes: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.messages + other.messages, self.content_bytes + other.content_bytes)


@dataclass(frozen=True, slots=True)
class PruneSummary:
    """What a prune did (or, dry, would do): per target, then the space given back (SQLite)."""

    dry_run: bool
    targets: tuple[tuple[PruneTarget, Pruned], ...]
    space_before: FileSpace | None = None
    space_after: FileSpace | None = None

    @property
    def total(self) -> Pruned:
        """Every target's messages and bytes together."""
        return sum((pruned for _, pruned in self.targets), Pruned())

    @property
    def audit_detail(self) -> str:
        """What the audit trail says of this prune: messages per channel and bytes, never content."""
        channels = ", ".join(f"{t.label} {pruned.messages}" for t, pruned in self.targets if pruned.messages)
        total = self.total
        return (
            f"pruned {total.messages} message(s) ({channels or 'none'}),"
            f" {total.content_bytes} bytes of content"
        )


def _eligible(target: PruneTarget) -> list[sa.ColumnElement[bool]]:
    """The target's messages whose content may go: not pruned yet, old enough, processing over."""
    m = messages.c
    channel = m.channel.is_(None) if target.channel is None else m.channel == target.channel
    return [
        channel,
        m.pruned_at.is_(None),
        m.received_at < target.cutoff,
        m.status.in_(_FINAL),
    ]


def _length(column: sa.ColumnElement) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.length(column), 0)


_MESSAGE_BYTES = _length(messages.c.raw) + _length(messages.c.transformed)
_DELIVERY_BYTES = sa.func.coalesce(
    sa.func.sum(_length(deliveries.c.payload) + _length(deliveries.c.response)), 0
)


class RetentionRepository:
    """Blocking pruning of message content, and the space it frees; never call it on the reactor thread."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def targets(self, policy: RetentionPolicy, *, channel: str | None = None) -> list[PruneTarget]:
        """What ``policy`` prunes now: one target per stored channel with a retention (only ``channel``'s).

        The messages of no channel are a target of their own when the policy has a default.
        """
        now = self._clock()
        with store_errors("listing the stored channels"), self._engine.connect() as connection:
            stored = list(self._stored_channels(connection))
        names: list[str | None] = [channel] if channel is not None else [*stored, None]
        return [
            PruneTarget(name, now - timedelta(days=days))
            for name in names
            if (days := policy.days_for(name)) is not None
        ]

    @staticmethod
    def _stored_channels(connection: sa.Connection) -> Iterator[str]:
        """Every channel name in the messages table: one index seek per name, not a scan of the table."""
        m = messages.c
        after = connection.execute(sa.select(sa.func.min(m.channel))).scalar_one()
        while after is not None:
            yield after
            after = connection.execute(
                sa.select(sa.func.min(m.channel)).where(m.channel > after)
            ).scalar_one()

    def measure(self, target: PruneTarget) -> Pruned:
        """What pruning ``target`` would remove now, changing nothing (a dry run)."""
        eligible = sa.select(messages.c.id).where(*_eligible(target)).scalar_subquery()
        counted = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(_MESSAGE_BYTES), 0)).where(
            *_eligible(target)
        )
        delivered = sa.select(_DELIVERY_BYTES).where(deliveries.c.message_id.in_(eligible))
        with store_errors("measuring what retention removes"), self._engine.connect() as connection:
            count, message_bytes = connection.execute(counted).one()
            delivery_bytes = connection.execute(delivered).scalar_one()
        return Pruned(count, int(message_bytes) + int(delivery_bytes))

    def prune_batch(self, target: PruneTarget, *, limit: int) -> Pruned:
        """Remove the content of up to ``limit`` of the target's oldest eligible messages, in one transaction.

        Fewer than ``limit`` pruned means the target is done.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        m, d = messages.c, deliveries.c
        oldest = (
            sa.select(m.id, _MESSAGE_BYTES).where(*_eligible(target)).order_by(m.received_at).limit(limit)
        )
        sqlite = self._engine.dialect.name == "sqlite"
        with store_errors("pruning message content"), self._engine.connect() as connection:
            with foreign_keys_off(connection) if sqlite else contextlib.nullcontext():
                # TRANSACTION: a batch of messages loses its content together with its deliveries'
                # payloads and answers, and is marked pruned: never a message half pruned.
                with connection.begin():
                    sizes = dict(connection.execute(oldest).all())
                    if not sizes:
                        return Pruned()
                    # The status is checked again: on PostgreSQL a resend or reprocess may have come between.
                    claimed = connection.execute(
                        sa.update(messages)
                        .where(m.id.in_(list(sizes)), m.pruned_at.is_(None), m.status.in_(_FINAL))
                        .values(raw=b"", transformed=None, pruned_at=self._clock())
                        .returning(m.id)
                    ).scalars()
                    pruned = sorted(claimed)
                    if not pruned:
                        return Pruned()
                    delivery_bytes = connection.execute(
                        sa.select(_DELIVERY_BYTES).where(d.message_id.in_(pruned))
                    ).scalar_one()
                    connection.execute(
                        sa.update(deliveries)
                        .where(d.message_id.in_(pruned))
                        .values(payload=None, response=None)
                    )
                    if sqlite:
                        # Content of less than a page was inside its row's page, where nothing
                        # would use the room again (rows go in in id order): packed into few pages.
                        repack_rows(connection, m.id, pruned)
                        repack_rows(connection, d.message_id, pruned)
        return Pruned(len(pruned), sum(sizes[i] for i in pruned) + int(delivery_bytes))

    def prune(
        self,
        policy: RetentionPolicy,
        *,
        limit: int,
        dry_run: bool = False,
        channel: str | None = None,
        progress: Callable[[PruneTarget, Pruned], None] | None = None,
    ) -> PruneSummary:
        """Prune (or with ``dry_run`` measure) every target of ``policy``, ``limit`` messages a transaction.

        ``progress(target, so_far)`` after each batch. Then, on SQLite, the freed pages go back
        to the file system, ``limit`` pages a step.
        """
        before = self.space()
        done = []
        for target in self.targets(policy, channel=channel):
            if dry_run:
                done.append((target, self.measure(target)))
                continue
            so_far = Pruned()
            while True:
                batch = self.prune_batch(target, limit=limit)
                so_far += batch
                if progress is not None and batch.messages:
                    progress(target, so_far)
                if batch.messages < limit:
                    break
            done.append((target, so_far))
        if not dry_run:
            for _ in range(self.give_back_steps(limit)):
                if self.give_back_space(limit) < limit:
                    break
        return PruneSummary(dry_run, tuple(done), before, self.space())

    def space(self) -> FileSpace | None:
        """SQLite: how the file's pages are used; None on PostgreSQL (its autovacuum keeps the space)."""
        if self._engine.dialect.name != "sqlite":
            return None
        with store_errors("reading the file's space"), self._engine.connect() as connection:
            return file_space(connection)

    def give_back_steps(self, pages: int) -> int:
        """How many ``give_back_space(pages)`` steps give back every free page there is now (0: none to give).

        A bound for the caller's loop: writes going on meanwhile may free pages of their own.
        """
        space = self.space()
        if space is None or space.auto_vacuum != AUTO_VACUUM_INCREMENTAL:
            return 0
        return -(-space.freelist_count // pages)

    def give_back_space(self, pages: int) -> int:
        """SQLite: give up to ``pages`` free pages back to the file system; how many (0 when nothing to do).

        Needs auto_vacuum=INCREMENTAL (new stores have it; ``vacuum`` converts an older file).
        PostgreSQL: 0, its autovacuum makes the space reusable and keeps it.
        """
        if self._engine.dialect.name != "sqlite":
            return 0
        with store_errors("giving free space back"), self._engine.connect() as connection:
            if file_space(connection).auto_vacuum != AUTO_VACUUM_INCREMENTAL:
                return 0
            freed = incremental_vacuum(connection, pages)
            checkpoint_wal(connection)  # the file shrinks when the WAL is copied back into it
        return freed

    def vacuum(self) -> None:
        """VACUUM: what a prune's own steps do not do.

        SQLite: the whole file (and the record's own, after it) is rewritten, with
        auto_vacuum=INCREMENTAL (a file created without it needs this once before pruning returns
        space), and compacted: the room pruned rows leave inside their pages goes back too. It
        holds the write lock while it copies the whole database and needs as much free disk
        again: stop the engine first on a large store.
        PostgreSQL: a plain VACUUM of messages and deliveries now, instead of at autovacuum's turn.
        """
        with store_errors("vacuuming the store"):
            if self._engine.dialect.name != "sqlite":
                vacuum_postgresql(self._engine, (messages, deliveries))
                return
            with self._engine.connect() as connection:
                vacuum_to_incremental(connection)
                if attached(connection):  # the record's own file: its merges and updates leave room too
                    vacuum_to_incremental(connection, RECORD_SCHEMA)
