"""Web fixtures: a real WebService on a loopback port over a real SQLite store, and the log it writes."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from engine.config import EngineSettings, HttpSettings
from engine.web.metrics import Metrics
from engine.web.server import WebService
from tests.fakes.web import USERS, RunningWeb, console_resources


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def start_web(store):
    """Starts a WebService on an ephemeral loopback port, stopped after the test.

    ``start_web(users=..., extra_resources=..., on=store, **http)`` gives a RunningWeb; ``http``
    are further engine.http settings (``session_minutes``, ``max_body_bytes`` ...); ``on`` a
    store other than the test's.
    """
    services: list[WebService] = []

    def start(*, users: dict[str, str] | None = None, extra_resources=None, on=None, **http) -> RunningWeb:
        http.setdefault("endpoint", "tcp:0:interface=127.0.0.1")
        settings = EngineSettings(http=HttpSettings(users=USERS if users is None else users, **http))
        metrics = Metrics()
        serving = on if on is not None else store
        if extra_resources is None:  # the console's dashboard reads these: an engine without channels
            extra_resources = console_resources(serving)
        service = WebService(
            settings, serving, reactor=reactor, metrics=metrics, extra_resources=extra_resources
        )
        service.startService()
        services.append(service)
        return RunningWeb(service, serving, metrics)

    yield start
    for service in services:
        if service.running:
            pytest_twisted.blockon(service.stopService())
