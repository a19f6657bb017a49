"""Paused queues, honoured by every engine process: ``Controls`` writes them, ``PauseWatch`` applies them.

A pause is a row in the store (engine.store.controls), written by the API, the CLI or an
``on_error: halt`` queue. Each process with the delivery role runs a ``PauseWatch``: it reads the
pauses every ``POLL_SECONDS`` (and at once when this process wrote one) and holds or releases its
dispatchers, so a pause written anywhere stops the queue's holder within about a second. A held
dispatcher finishes the delivery in flight and sends nothing more; its queue keeps filling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from engine.store.controls import AlertState, ControlRepository
from engine.store.dashboard import DashboardRepository
from engine.store.reads import Pause, is_paused

__all__ = ["POLL_SECONDS", "Controls", "PauseWatch"]

log = Logger()

#: How often each process reads the pauses.
POLL_SECONDS = 1.0


class Controls:
    """The store's pauses and alert states as Deferreds (each call on the store's threads)."""

    def __init__(self, store):
        """``store``: a started MessageStore (its engine is read at the first call)."""
        self._store = store
        self._repository: ControlRepository | None = None
        self._dashboard: DashboardRepository | None = None

    @property
    def repository(self) -> ControlRepository:
        """The blocking repository underneath."""
        if self._repository is None:
            self._repository = ControlRepository(self._store.repository.engine)
        return self._repository

    def pauses(self) -> defer.Deferred:
        """Fires with {(channel, destination): Pause}."""
        d = self._store.read(ControlRepository.pauses, self.repository)
        return d.addCallback(lambda rows: {(p.channel, p.destination): p for p in rows})

    def pause(self, channel: str, destination: str, *, by: str, reason: str = "") -> defer.Deferred:
        """Fires with True once paused (False: it was already)."""
        return self._store.write(
            ControlRepository.pause, self.repository, channel, destination, by=by, reason=reason
        )

    def halt(self, channel: str, destination: str, delivery_id: int, reason: str) -> defer.Deferred:
        """Fires with True once the halt queue's pause is written."""
        return self._store.write(
            ControlRepository.halt, self.repository, channel, destination, delivery_id, reason
        )

    def resume(self, channel: str, destination: str) -> defer.Deferred:
        """Fires with the Pause removed (its halted delivery queued again at the head), or None."""
        return self._store.write(ControlRepository.resume, self.repository, channel, destination)

    def alert_states(self) -> defer.Deferred:
        """Fires with {rule: AlertState}."""
        return self._store.read(ControlRepository.alert_states, self.repository)

    def set_alert_state(self, state: AlertState) -> defer.Deferred:
        """Fires once the rule's state is stored."""
        return self._store.write(ControlRepository.set_alert_state, self.repository, state)

    def counts(self, since, queues) -> defer.Deferred:
        """Fires with DashboardRepository.counts(since, queues)."""
        if self._dashboard is None:
            self._dashboard = DashboardRepository(self._store.repository.engine)
        return self._store.read(DashboardRepository.counts, self._dashboard, since, tuple(queues))


class PauseWatch(service.Service):
    """Reads the pauses every ``poll_seconds`` and holds or releases the dispatchers of ``channels()``."""

    def __init__(
        self,
        controls: Controls,
        channels: Callable[[], Mapping],
        *,
        reactor,
        poll_seconds=POLL_SECONDS,
        observer: Callable[[str, dict], None] | None = None,
    ):
        """``observer`` is told ``queue_paused`` (channel, destination, paused) as a queue's state changes."""
        self.setName("pauses")
        self.controls = controls
        self._channels = channels
        self.reactor = reactor
        self.poll_seconds = poll_seconds
        self.pauses: dict[tuple[str, str], Pause] = {}
        self._timer = None
        self._reading: defer.Deferred | None = None
        self._again = False
        self._observe = observer or (lambda event, fields: None)
        self._told: dict[tuple[str, str], bool] = {}

    def startService(self) -> None:
        super().startService()
        self.poll_now()

    def stopService(self):
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        return self._reading if self._reading is not None else defer.succeed(None)

    def poll_now(self) -> None:
        """Read the pauses now (or right after the read under way): this process wrote one."""
        if self._reading is not None:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        started = self.reactor.seconds()
        self._reading = self.controls.pauses()
        self._reading.addCallbacks(self._apply, self._failed, callbackArgs=(started,))
        self._reading.addBoth(self._read_done)

    def _apply(self, pauses: dict, started: float) -> None:
        self.pauses = pauses
        for channel in list(self._channels().values()):
            for dispatcher in channel.dispatchers.values():
                pause = is_paused(pauses, channel.name, dispatcher.name)
                dispatcher.set_paused(pause, read_at=started)
                key, paused = (channel.name, dispatcher.name), pause is not None
                if self._told.get(key) != paused:
                    self._told[key] = paused
                    self._observe(
                        "queue_paused", {"channel": key[0], "destination": key[1], "paused": paused}
                    )

    def _failed(self, failure) -> None:
        log.warn("could not read the paused queues: {error}", error=failure.getErrorMessage())

    def _read_done(self, _) -> None:
        self._reading = None
        if not self.running:
            return
        if self._again:
            self._again = False
            self.poll_now()
        else:
            self._timer = self.reactor.callLater(self.poll_seconds, self.poll_now)
