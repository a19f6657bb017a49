"""Run the real engine in the test's reactor on loopback, talk to it from a thread, wait for what it does."""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater

from engine.config import parse_config
from engine.service import Engine
from engine.store.reads import MessageQuery

BASIC_CONFIG = """
engine:
  application: HUB
  facility: TEST
  data_dir: {data_dir}
  store:
    url: {store_url}
    lock_timeout_seconds: {lock_timeout}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
    max_frame_bytes: {max_frame_bytes}
    honour_accept_ack_type: {honour}
channels:
  - name: everything
    source: main
    accept:
      types: ["*"]
"""


def make_config(
    tmp_path: Path,
    *,
    store_url: str | None = None,
    lock_timeout: float = 5.0,
    max_frame_bytes: int = 4194304,
    honour: bool = False,
    text: str | None = None,
):
    """A Config for one listener on an ephemeral port and one channel that accepts everything."""
    body = text or BASIC_CONFIG
    body = textwrap.dedent(body).format(
        data_dir=tmp_path / "data",
        store_url=store_url or "null",
        lock_timeout=lock_timeout,
        max_frame_bytes=max_frame_bytes,
        honour="true" if honour else "false",
    )
    return parse_config(body, source=str(tmp_path / "channels.yaml"))


def start_engine(config) -> Engine:
    """Start an Engine in the running reactor (call from a pytest-twisted test)."""
    engine = Engine(config, reactor)
    engine.startService()
    return engine


def port_of(engine: Engine, listener: str = "main") -> int:
    """The ephemeral port a listener got."""
    return engine.listeners[listener].port


def in_thread(func, *args, **kwargs):
    """Run blocking client code off the reactor thread (the reactor must keep serving the engine)."""
    return threads.deferToThread(func, *args, **kwargs)


def free_port() -> int:
    """A loopback port nobody listened on when asked."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@defer.inlineCallbacks
def wait_until(predicate, seconds: float = 15.0, step: float = 0.05):
    """Poll an async or plain predicate until true (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        yield deferLater(reactor, step, lambda: None)
    raise AssertionError("condition not met in time")


def statuses(engine: Engine, **criteria) -> defer.Deferred:
    """Fires with {control id: status} of the engine's stored messages (up to 1,000 matching ``criteria``)."""
    d = engine.store.search(MessageQuery(limit=1000, **criteria))
    d.addCallback(lambda rows: {r.control_id: r.status for r in rows})
    return d
