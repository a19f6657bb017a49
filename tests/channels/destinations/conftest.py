"""Fixtures of the destination tests: destinations started and stopped, ports where nobody answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import pytest_twisted

from tests.fakes.fhirserver import FhirServer, serve_fhir
from tests.fakes.harness import free_port


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    return free_port()


@pytest.fixture
def unanswered_port():
    """A port whose listener never accepts and whose backlog is full.

    New connections hang (Linux drops the SYN).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)  # let the kernel queue the fillers before the test connects
    yield port
    for sock in [*fillers, listener]:
        sock.close()


@pytest.fixture
def started():
    """Starts destinations, and stops each after the test: ``started(destination)`` gives it back."""
    running = []

    def start(destination):
        destination.start()
        running.append(destination)
        return destination

    yield start
    for destination in running:
        pytest_twisted.blockon(destination.stop())


@pytest.fixture
def fhir_server() -> Iterator[FhirServer]:
    """The test FHIR server on an ephemeral loopback port; ``url`` is its base URL."""
    yield from serve_fhir()
