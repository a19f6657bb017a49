"""Which work this process may do: a channel's processing, a destination's queue, a scheduled job.

Work that must be done by one process at a time is named by a key (``channel_key``, ``queue_key``,
``job_key``). A ``Leases`` says whether this process holds a key now, and tells whoever watches a
key when it is acquired or lost. ``LocalLeases`` is the engine alone on its store: every key is
held from the start and never lost. With worker processes or several nodes the leases are rows in
the store, claimed with an expiry and renewed (``StoreLeases``), and writes made under a lease
carry its ``LeaseToken`` so that a process that lost its lease cannot write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer

from engine.model import LeaseToken

__all__ = ["LOCAL_LEASES", "Leases", "LocalLeases", "channel_key", "job_key", "queue_key"]


def channel_key(channel: str) -> str:
    """The key of a channel's processing (its passes and processing at intake)."""
    return f"channel:{channel}"


def queue_key(channel: str, destination: str) -> str:
    """The key of one destination's queue (its dispatcher)."""
    return f"queue:{channel}/{destination}"


def job_key(job: str) -> str:
    """The key of a scheduled job (``retention``)."""
    return f"job:{job}"


#: Told when a watched key is acquired.
Acquired = Callable[[], None]
#: Told when a watched key is lost: stop the work; the Deferred (or None) fires once it stopped.
Lost = Callable[[], "defer.Deferred | None"]


class Leases(Protocol):
    """What a channel, a dispatcher or a job asks before working, and whom it tells it works."""

    @property
    def shared(self) -> bool:
        """True when other processes may hold keys of the same store (worker processes, nodes)."""

    def holds(self, key: str) -> bool:
        """Whether this process holds ``key`` now."""

    def token(self, key: str) -> LeaseToken | None:
        """The token to write under (None when held without one: ``LocalLeases``, or not held)."""

    def watch(self, key: str, acquired: Acquired, lost: Lost) -> None:
        """Take part in holding ``key``: ``acquired`` once it is held (at once if it is), ``lost`` if lost."""

    def unwatch(self, key: str) -> defer.Deferred:
        """Stop taking part: a held key is released (fires once released)."""


class LocalLeases:
    """The engine alone on its store: every key is held, for good, without a token."""

    shared = False

    def holds(self, key: str) -> bool:
        return True

    def token(self, key: str) -> LeaseToken | None:
        return None

    def watch(self, key: str, acquired: Acquired, lost: Lost) -> None:
        acquired()

    def unwatch(self, key: str) -> defer.Deferred:
        return defer.succeed(None)


#: The one LocalLeases the engine uses when nothing else shares its store.
LOCAL_LEASES = LocalLeases()
