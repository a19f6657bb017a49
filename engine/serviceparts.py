"""The parts an Engine (engine.service) is made of besides its channels' and listeners' own services.

The roles an engine process may have (``ROLES``); ``Running``, which keeps the store and the parts that
need it started in order; the jobs' service (retention and the content index) and the channels'
service; and the wake-ups and leases of a process that shares its store with others.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from engine.channels.channel import Channel
from engine.channels.leases import LOCAL_LEASES, Leases, job_key
from engine.channels.leasing import StoreLeases
from engine.channels.wakeups import Peers, Wakeups
from engine.configengine import ClusterSettings
from engine.store.indexer import ContentIndexer
from engine.store.message_store import MessageStore
from engine.store.pruner import Pruner

__all__ = [
    "ALL_ROLES",
    "RETENTION_KEY",
    "ROLES",
    "ChannelsService",
    "RetentionService",
    "Running",
    "check_roles",
    "make_leases",
    "make_wakeups",
]

log = Logger()

#: What an engine process may do, in the order ``hl7engine run`` names them.
ROLES = ("intake", "processing", "delivery", "jobs")
#: The roles of an engine process that does everything (one process, or each node of a cluster).
ALL_ROLES = frozenset(ROLES)


def check_roles(roles) -> frozenset[str]:
    """``roles`` as a frozenset when there is one or more and each is one of ``ROLES``; else ValueError."""
    roles = frozenset(roles)
    unknown = sorted(roles - ALL_ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be some of {', '.join(ROLES)} (got {', '.join(unknown) or 'none'})")
    return roles


class Running(service.Service):
    """Keeps parts of the engine started for the engine's life: each ``start()`` in order at start.

    At stop, each part's ``stop()`` in the reverse order, one after the other. The engine's services
    stop all at once (MultiService), so parts that need one another run in one ``Running``: the
    store, the wake-ups (listening before the node registers their address) and the leases kept in
    the store, which stop first, while the store still takes writes, so the work they held stops
    and is released, and other processes take it over at once.
    """

    def __init__(self, name: str, *parts):
        self.setName(name)
        self.parts = parts

    def startService(self) -> None:
        super().startService()
        for part in self.parts:
            started = part.start()
            if isinstance(started, defer.Deferred):  # the leases register (and retry) in the background
                started.addErrback(_start_failed, self.name)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        for part in reversed(self.parts):
            yield part.stop()


def _start_failed(failure, name: str) -> None:
    log.failure("a part of the {name} service did not start", failure, name=name)


#: The lease of the retention schedule: with processes sharing a store, only its holder prunes.
RETENTION_KEY = job_key("retention")


class RetentionService(service.Service):
    """Runs the store's jobs while the engine runs: the retention schedule (``Pruner``) and the content
    index (``ContentIndexer``); stops them before the store stops."""

    def __init__(self, pruner: Pruner, leases: Leases = LOCAL_LEASES, indexer: ContentIndexer | None = None):
        self.setName("retention")
        self.pruner = pruner
        self.leases = leases
        self.indexer = indexer

    def startService(self) -> None:
        super().startService()
        self.leases.watch(RETENTION_KEY, lambda: None, lambda: None)
        self.pruner.start()
        if self.indexer is not None:
            self.indexer.start(first_after=0)  # what came while the engine was down, at once

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self.indexer is not None:
            yield self.indexer.stop()
        yield self.pruner.stop()
        yield self.leases.unwatch(RETENTION_KEY)


class ChannelsService(service.Service):
    """Owns the channels (and through them the destinations' connections)."""

    def __init__(self, channels: dict[str, Channel]):
        self.setName("channels")
        self.channels = channels

    def startService(self) -> None:
        super().startService()
        for channel in self.channels.values():
            channel.start()

    def stopService(self):
        super().stopService()
        return defer.gatherResults([c.stop() for c in self.channels.values()], consumeErrors=True)


def make_wakeups(cluster: ClusterSettings, reactor, peers: Peers, observer) -> Wakeups:
    """The wake-ups of a process: on ``wake_host``/``wake_port``, to the ``peers()`` the leases saw alive."""
    return Wakeups(
        reactor=reactor, peers=peers, host=cluster.wake_host, port=cluster.wake_port, observer=observer
    )


def make_leases(
    cluster: ClusterSettings, store: MessageStore, reactor, wakeups: Wakeups, roles: frozenset[str], observer
) -> StoreLeases:
    """The leases of a process with ``roles``: registered with the address its ``wakeups`` listen on."""
    return StoreLeases(
        store,
        reactor=reactor,
        node=cluster.node,
        roles=roles,
        lease_seconds=cluster.lease_seconds,
        renew_every=cluster.renew_every,
        wake_address=lambda: wakeups.address,  # known once they listen, before the node registers
        observer=observer,  # /metrics: hl7engine_leases_held, hl7engine_leases_lost_total
    )
