"""A downstream MLLP receiver on loopback, built from the engine's own listener, answering as scripted."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engine.hl7.mllp import frame
from engine.listeners.client import control_id_of
from engine.listeners.mllp import MLLPListenerService, MLLPServerFactory
from tests.fakes.outbound import ack

# An answer gets (payload, peer, downstream) and returns the reply payload, None for no reply, or a
# Deferred of either.
Answer = Callable[[bytes, str, "Downstream"], "bytes | None | defer.Deferred"]


def reply(code: str, *errors: int, version: str = "2.5.1") -> Answer:
    """Answer with an ACK of this code for the message's own control id."""
    return lambda payload, peer, downstream: ack(code, control_id_of(payload), *errors, version=version)


def wrong_control_id(payload: bytes, peer: str, downstream: Downstream) -> bytes:
    """Answer AA, but for another control id."""
    return ack("AA", "NOT-" + control_id_of(payload))


def silence(payload: bytes, peer: str, downstream: Downstream) -> None:
    """Do not answer at all."""
    return None


def hang_up(payload: bytes, peer: str, downstream: Downstream) -> None:
    """Close the sender's connection instead of answering."""
    for connection in list(downstream.factory.connections):
        if connection.peer == peer:
            connection.transport.loseConnection()
    return None


def twice(payload: bytes, peer: str, downstream: Downstream) -> bytes:
    """Answer AA twice (the extra reply arrives when nothing is in flight)."""
    extra = ack("AA", control_id_of(payload))
    for connection in list(downstream.factory.connections):
        if connection.peer == peer:
            connection.transport.write(frame(extra))
    return extra


def after(seconds: float, answer: Answer) -> Answer:
    """Give ``answer`` only after a delay."""
    return lambda payload, peer, downstream: deferLater(reactor, seconds, answer, payload, peer, downstream)


class Gate:
    """An answer held back until the test releases it: the message stays in flight as long as needed.

    ``arrived`` fires with the payload once the message is received (so it is in flight).
    """

    def __init__(self, answer: Answer | None = None):
        self.arrived = defer.Deferred()
        self._released = defer.Deferred()
        self._answer = answer or reply("AA")

    def __call__(self, payload: bytes, peer: str, downstream: Downstream) -> defer.Deferred:
        self.arrived.callback(payload)
        return self._released.addCallback(lambda _: self._answer(payload, peer, downstream))

    def release(self) -> None:
        """Give the answer now."""
        self._released.callback(None)


def raw(data: bytes) -> Answer:
    """Answer with these bytes as the reply payload."""
    return lambda payload, peer, downstream: data


class Downstream:
    """Receives framed messages like a partner system.

    Answers each with the next scripted answer (AA when none is left).
    """

    def __init__(self, endpoint: str = "tcp:0:interface=127.0.0.1"):
        self.answers: deque[Answer] = deque()
        self.received: list[bytes] = []
        self.events: list[str] = []
        self.connections_opened = 0
        self.factory = MLLPServerFactory(
            self, reactor=reactor, max_frame_bytes=1 << 20, idle_timeout=None, observer=self._observe
        )
        self.service = MLLPListenerService(
            "downstream", reactor, endpoint, self.factory, shutdown_timeout=1.0
        )
        self._port = None

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._port.getHost().port if self._port is not None else self.service.port

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next messages, in order."""
        self.answers.extend(answers)

    def start(self) -> int:
        """Start listening on the endpoint string; the port."""
        self.service.startService()
        return self.port

    @defer.inlineCallbacks
    def listen(self, endpoint):
        """Listen on an endpoint object instead (for options an endpoint string cannot express).

        Fires with the port.
        """
        self._port = yield endpoint.listen(self.factory)
        return self.port

    @defer.inlineCallbacks
    def stop(self):
        """Stop listening and close every connection."""
        if self._port is None:
            yield self.service.stopService()
            return
        yield self._port.stopListening()
        self.factory.close_all()

    def _observe(self, event: str, amount: int) -> None:
        if event == "connection_opened":
            self.connections_opened += amount

    def handle(self, payload: bytes, peer: str) -> defer.Deferred:
        control_id = control_id_of(payload)
        self.received.append(payload)
        self.events.append(f"received {control_id}")
        answer = self.answers.popleft() if self.answers else reply("AA")
        answering = defer.maybeDeferred(answer, payload, peer, self)

        def answered(result):
            self.events.append(f"answered {control_id}")
            return result

        return answering.addCallback(answered)

    def internal_error(self, payload: bytes, reason: str) -> bytes:
        return b""

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes:
        return b""
