"""Fixtures of the listener tests: MLLP listeners started on loopback in the test's reactor."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import reactor

from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from tests.fakes.listeners import EchoHandler, Events


@dataclass
class Listening:
    """A started listener: its service, the handler its frames reach, and the events its factory emitted."""

    service: MLLPListenerService
    handler: EchoHandler
    events: Events

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def open_connections(self) -> int:
        return len(self.service.factory.connections)


@pytest.fixture
def listen():
    """Starts MLLP listeners on 127.0.0.1 with an EchoHandler (global reactor); stops them after the test.

    Keyword arguments go to the factory (idle_timeout, frame_timeout, max_frame_bytes) or to the
    service (tls, max_connections, allowed_networks, backlog).
    """
    started: list[MLLPListenerService] = []

    def start(
        *,
        endpoint: str = "tcp:0:interface=127.0.0.1",
        idle_timeout: float | None = 30.0,
        frame_timeout: float | None = None,
        max_frame_bytes: int = 1 << 20,
        **options,
    ) -> Listening:
        handler, events = EchoHandler(), Events()
        factory = MLLPServerFactory(
            handler,
            reactor=reactor,
            max_frame_bytes=max_frame_bytes,
            idle_timeout=idle_timeout,
            frame_timeout=frame_timeout,
            observer=events,
        )
        service = MLLPListenerService("test", reactor, endpoint, factory, shutdown_timeout=2.0, **options)
        service.startService()
        started.append(service)
        return Listening(service, handler, events)

    yield start
    for service in started:
        pytest_twisted.blockon(service.stopService())
