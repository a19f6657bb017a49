"""StoreLeases: the work of one store shared by the engine processes that run on it, through lease rows.

Each process registers itself (a ``nodes`` row) and, every ``renew_every`` seconds: beats its
heart, renews the leases it holds (one it could not renew was taken over: its work stops), and
claims free or expired leases of the keys it watches up to its fair share (only of the kinds of
work its roles do: ``ROLES``). The share of a kind
of work (channels, queues, jobs) is the number of watched keys of that kind over the live
processes whose roles do that kind, rounded up; a process holding more than its share (another
one joined) stops the work of the surplus and releases it, so the newcomer can claim it. A clean
stop stops the work and releases every lease at once. A process that cannot renew counts its
leases lost one renewal before they expire, so it stops before another process may take them; the
writes made under them check the token anyway (``LeaseLost``).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.channels.leases import Acquired, Lost
from engine.channels.wakeups import peer_address
from engine.errors import StoreError
from engine.model import LeaseToken, utc_now

__all__ = ["ROLES", "Holding", "StoreLeases"]

log = Logger()

#: The process role that does each kind of work (a key's prefix).
ROLES = {"channel": "processing", "queue": "delivery", "job": "jobs"}


@dataclass(frozen=True, slots=True)
class Holding:
    """A lease this process holds: its token, since when, and until when by this process's reckoning."""

    token: LeaseToken
    acquired_at: datetime
    valid_until: float  # reactor seconds: renewed before then, or counted lost


class StoreLeases:
    """The ``Leases`` of a process sharing its store with others: lease rows claimed and renewed."""

    shared = True

    def __init__(
        self,
        store,
        *,
        reactor,
        node: str,
        roles: Iterable[str],
        lease_seconds: float,
        renew_every: float,
        wake_address: str | Callable[[], str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        observer: Callable[[str, dict], None] | None = None,
    ):
        """``store``: a MessageStore; ``node``: the machine's name in the cluster (engine.cluster.node).

        ``wake_address``: where this process hears wake-ups (``Wakeups.address``), or the function
        that says it once they listen: read when the node registers.
        """
        self._store = store
        self._reactor = reactor
        self._node = node
        self.roles = frozenset(roles)
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every
        # How long a lease counts as held here after the start of its last renewal: one renewal
        # less than in the store, so this process stops its work before another may take it over.
        self._valid_for = lease_seconds - renew_every
        self._wake_address = wake_address
        self._clock = clock
        # Told "leases_held" (count) after every round and "lease_lost" (key) for each lease lost.
        self._observe = observer or (lambda event, fields: None)
        self.node_id: int | None = None
        self._watchers: dict[str, tuple[Acquired, Lost]] = {}
        self._held: dict[str, Holding] = {}
        self._ensured: set[str] = set()
        # Keys whose work is stopping (lost, or handed over and released once stopped): not claimed
        # again until then. A round never waits for them (a delivery in flight may take a while),
        # so the other leases are renewed meanwhile.
        self._stopping_work: dict[str, defer.Deferred] = {}
        self._loop: task.LoopingCall | None = None
        self._busy = False  # a round is under way (self._round)
        self._round: defer.Deferred = defer.succeed(None)
        self._again = False
        self._stopping = False
        self._peers: list[tuple[str, int]] = []

    # -- Leases --------------------------------------------------------------------------------

    def holds(self, key: str) -> bool:
        holding = self._held.get(key)
        return holding is not None and self._reactor.seconds() < holding.valid_until

    def token(self, key: str) -> LeaseToken | None:
        return self._held[key].token if self.holds(key) else None

    def watch(self, key: str, acquired: Acquired, lost: Lost) -> None:
        self._watchers[key] = (acquired, lost)
        if self._loop is not None and not self._stopping:
            self._run_round()

    def unwatch(self, key: str) -> defer.Deferred:
        self._watchers.pop(key, None)
        holding = self._held.pop(key, None)
        if holding is None:
            return defer.succeed(None)
        return self._release([holding.token])

    def holdings(self) -> list[tuple[str, int, datetime]]:
        """What this process holds now: (key, token, acquired_at), in key order."""
        return sorted((key, h.token.token, h.acquired_at) for key, h in self._held.items() if self.holds(key))

    def peers(self) -> list[tuple[str, int]]:
        """Where the other live processes hear wake-ups, (host, port), as the last round read them."""
        return self._peers

    # -- life ----------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        """Register this process as a node, then claim its share at once and every ``renew_every`` seconds."""
        self._stopping = False
        wake_address = self._wake_address() if callable(self._wake_address) else self._wake_address
        while self.node_id is None:
            try:
                self.node_id = yield self._store.register_node(
                    self._node,
                    socket.gethostname(),
                    os.getpid(),
                    sorted(self.roles),
                    wake_address,
                    self._clock(),
                )
            except StoreError as error:
                log.warn("could not register this node, trying again: {error}", error=str(error))
                yield task.deferLater(self._reactor, self._renew_every, lambda: None)
            if self._stopping:
                return
        log.info(
            "node {node} (id {node_id}) shares its store; roles {roles}",
            node=self._node,
            node_id=self.node_id,
            roles=",".join(sorted(self.roles)),
        )
        self._loop = task.LoopingCall(self._run_round)
        self._loop.clock = self._reactor
        self._loop.start(self._renew_every, now=True)

    @defer.inlineCallbacks
    def stop(self):
        """Stop the work still held, release every lease (others take it at once), mark the node stopped."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._busy:
            yield self._round
        held, self._held = self._held, {}
        self._stop_work(held, release=True)
        yield defer.DeferredList(list(self._stopping_work.values()))
        if self.node_id is not None:
            try:
                yield self._store.node_stopped(self.node_id, self._clock())
            except StoreError as error:
                log.warn("could not record that this node stopped: {error}", error=str(error))

    # -- rounds --------------------------------------------------------------------------------

    def _run_round(self) -> defer.Deferred | None:
        """A round now, or right after the one under way; never fails (the loop would end)."""
        if self._busy:
            self._again = True
            return None
        self._busy = True
        self._round = self._rounds()
        return self._round

    @defer.inlineCallbacks
    def _rounds(self):
        try:
            self._again = True
            while self._again and not self._stopping:
                self._again = False
                yield self._one_round()
        except Exception:
            log.failure("lease round failed")
        finally:
            self._busy = False

    @defer.inlineCallbacks
    def _one_round(self):
        started = self._reactor.seconds()
        now = self._clock()
        expires_at = now + timedelta(seconds=self._lease_seconds)
        try:
            yield self._renew(started, expires_at)  # first: the work under way depends on it
            yield self._store.heartbeat(self.node_id, now)
            new_keys = set(self._watchers) - self._ensured
            if new_keys:
                yield self._store.ensure_lease_keys(sorted(new_keys))
                self._ensured |= new_keys
            live = yield self._store.live_nodes(now, self._lease_seconds)
            self._peers = _wake_addresses(live, self.node_id)
            yield self._balance(live, started, now, expires_at)
        except StoreError as error:
            log.warn("leases not renewed: {error}", error=str(error))
            expired = {key: h for key, h in self._held.items() if self._reactor.seconds() >= h.valid_until}
            self._lost(expired, "it expired before the store could renew it")
        self._observe("leases_held", {"count": len(self._held)})

    @defer.inlineCallbacks
    def _renew(self, started: float, expires_at: datetime):
        if not self._held:
            return
        kept = yield self._store.renew_leases(
            self.node_id, [h.token for h in self._held.values()], expires_at
        )
        kept_keys = {token.key for token in kept}
        lost = {}
        for key, holding in list(self._held.items()):
            if key in kept_keys:
                self._held[key] = Holding(holding.token, holding.acquired_at, started + self._valid_for)
            else:
                lost[key] = holding
        self._lost(lost, "another process took it over")

    @defer.inlineCallbacks
    def _balance(self, live, started: float, now: datetime, expires_at: datetime):
        """Claim up to the fair share of each kind of work; give back what is over it."""
        kinds: dict[str, list[str]] = {}
        for key in sorted(self._watchers):
            kinds.setdefault(key.split(":", 1)[0], []).append(key)
        for kind, keys in kinds.items():
            role = ROLES.get(kind)
            if role not in self.roles:  # not work this process does: watched, never claimed
                continue
            sharing = sum(1 for node in live if role in node.roles)
            share = math.ceil(len(keys) / max(1, sharing))
            mine = [key for key in keys if key in self._held]
            if len(mine) > share:
                surplus = {key: self._held.pop(key) for key in mine[share:]}
                self._stop_work(surplus, release=True)
                log.info(
                    "released {count} {kind} lease(s) over this node's share ({share}) for other nodes",
                    count=len(surplus),
                    kind=kind,
                    share=share,
                )
            elif len(mine) < share:
                free = [key for key in keys if key not in self._held and key not in self._stopping_work]
                taken = yield self._store.claim_leases(self.node_id, free, share - len(mine), now, expires_at)
                yield self._acquired(taken, started, now)

    @defer.inlineCallbacks
    def _acquired(self, taken: list[LeaseToken], started: float, now: datetime):
        unwatched = []
        for token in taken:
            watcher = self._watchers.get(token.key)
            if watcher is None or self._stopping:  # unwatched while the claim was under way
                unwatched.append(token)
                continue
            self._held[token.key] = Holding(token, now, started + self._valid_for)
            log.info("lease {key} acquired (token {token})", key=token.key, token=token.token)
            try:
                watcher[0]()
            except Exception:
                log.failure("starting the work of {key} failed", key=token.key)
        yield self._release(unwatched)

    def _lost(self, lost: dict[str, Holding], why: str) -> None:
        for key in lost:
            self._held.pop(key, None)
            log.warn("lease {key} lost: {why}; its work stops", key=key, why=why)
            self._observe("lease_lost", {"key": key})
        self._stop_work(lost)

    def _stop_work(self, holdings: dict[str, Holding], *, release: bool = False) -> defer.Deferred:
        """Tell the watchers of these keys to stop their work (then ``release`` the leases); fires once done.

        Until then the keys are in ``_stopping_work``: not claimed again.
        """
        stops = [
            defer.maybeDeferred(self._watchers[key][1]).addErrback(
                lambda failure, key=key: log.failure("stopping the work of {key} failed", failure, key=key)
            )
            for key in holdings
            if key in self._watchers
        ]
        done = defer.DeferredList(stops, consumeErrors=True)
        if release:
            tokens = [holding.token for holding in holdings.values()]
            done.addCallback(lambda _: self._release(tokens))
        for key in holdings:
            self._stopping_work[key] = done

        def over(_) -> None:
            for key in holdings:
                if self._stopping_work.get(key) is done:
                    del self._stopping_work[key]

        return done.addCallback(over)

    @defer.inlineCallbacks
    def _release(self, tokens: list[LeaseToken]):
        if not tokens:
            return
        try:
            yield self._store.release_leases(tokens)
        except StoreError as error:  # they expire instead
            log.warn("leases not released, they expire instead: {error}", error=str(error))


def _wake_addresses(live, node_id: int | None) -> list[tuple[str, int]]:
    """The (host, port) wake addresses of the ``live`` nodes but this one.

    A node without one (it hears no wake-ups), or with one that is not ``host:port`` (written by
    hand), is not woken: its poll finds the work all the same.
    """
    peers = []
    for node in live:
        if node.id != node_id and node.wake_address:
            try:
                peers.append(peer_address(node.wake_address))
            except ValueError:
                continue
    return peers
