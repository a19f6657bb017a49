"""The running engine: a Twisted MultiService built from a Config.

Services start in order (store first, then listeners) and stop in reverse (listeners finish
their in-flight messages and close, then the store flushes and closes).
"""

from __future__ import annotations

from twisted.application import service
from twisted.logger import Logger

from engine.channels.intake import Intake
from engine.config import Config
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from engine.store.messages import MessageStore

log = Logger()


class StoreService(service.Service):
    """Owns the MessageStore's threads for the life of the engine."""

    def __init__(self, store: MessageStore):
        self.setName("store")
        self.store = store

    def startService(self) -> None:
        super().startService()
        self.store.start()

    def stopService(self):
        super().stopService()
        return self.store.stop()


class Engine(service.MultiService):
    """The whole engine: store and listeners, built from one Config."""

    def __init__(self, config: Config, reactor, *, store: MessageStore | None = None, observer=None):
        super().__init__()
        self.config = config
        settings = config.engine
        self.store = store or MessageStore(
            config.store_url,
            reactor=reactor,
            durability=settings.store.durability,
            lock_timeout=settings.store.lock_timeout_seconds,
            max_batch=settings.store.max_batch,
        )
        StoreService(self.store).setServiceParent(self)
        self.listeners: dict[str, MLLPListenerService] = {}
        for listener in config.listeners:
            intake = Intake(listener, config.channels_for(listener.name), self.store, settings, observer=observer)
            factory = MLLPServerFactory(intake, reactor=reactor, max_frame_bytes=listener.max_frame_bytes, idle_timeout=listener.idle_timeout_seconds)
            listener_service = MLLPListenerService(listener.name, reactor, listener.endpoint, factory, shutdown_timeout=settings.shutdown_timeout_seconds)
            listener_service.setServiceParent(self)
            self.listeners[listener.name] = listener_service

    def startService(self) -> None:
        super().startService()
        for name, listener in self.listeners.items():
            log.info("listener {name} accepting MLLP on port {port}", name=name, port=listener.port)
