"""The partner systems of ``hl7engine demo``: a PMS, an EMR and a lab that send, and receivers that answer.

``Story`` writes the messages of fictional people as each system would send them, each system with
its own identifiers for the same person: the PMS registers them (ADT^A04), books an appointment
(SIU^S12) and posts a charge (DFT^P03); the EMR admits them (ADT^A01); the lab sends results
(ORU^R01) and, for every other person, a correction. ``Senders`` sends them at a steady rate over
MLLP, one thread and one connection per system (the blocking client never runs on the reactor).
``Receiver`` answers deliveries on the reactor; one can be told to fail (AR, ERR 207: "not now")
for a while, so that its queue grows and drains.
"""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from engine.hl7.ack import AckError, Recipient, Sender, build_ack
from engine.hl7.header import read_header
from engine.listeners.client import MLLPClient

__all__ = ["Receiver", "Senders", "Story"]

_FAMILY = ("GARCIA", "NGUYEN", "OKAFOR", "SMITH", "KOWALSKI", "TANAKA", "MULLER", "SILVA", "HASSAN", "BROWN")
_GIVEN = {"F": ("MARIA", "ANA", "GRACE", "YUKI", "FATIMA"), "M": ("JOHN", "PAUL", "KENJI", "OMAR", "LUCAS")}
_WARDS = ("4N", "5S", "ER")
_TESTS = (("2093-3", "Cholesterol", "mg/dL", 150, 260), ("2345-7", "Glucose", "mg/dL", 70, 180))


class Story:
    """The messages of one fictional person after another: (system, message bytes), endlessly."""

    def __init__(self, seed: int = 7, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.rng = random.Random(seed)
        self.clock = clock
        self.people = 0
        self.control_ids: Counter[str] = Counter()

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while True:
            yield from self._person()

    def _msh(self, system: str, message_type: str) -> str:
        self.control_ids[system] += 1
        now = self.clock().strftime("%Y%m%d%H%M%S")
        control_id = f"{system}{self.control_ids[system]:06d}"
        return f"MSH|^~\\&|{system}|DEMO|HL7ENGINE|DEMO-HUB|{now}||{message_type}|{control_id}|P|2.5.1"

    def _person(self) -> Iterator[tuple[str, bytes]]:
        self.people += 1
        n, rng = self.people, self.rng
        sex = rng.choice("FM")
        family, given = rng.choice(_FAMILY), rng.choice(_GIVEN[sex])
        born = (datetime(1940, 1, 1) + timedelta(days=rng.randrange(365 * 60))).strftime("%Y%m%d")
        name = f"{family}^{given}^^^^^L||{born}|{sex}"
        pms, emr, lab = f"P{100000 + n}^^^PMS^PI", f"E{500000 + n}^^^EMR^MR", f"L{900000 + n}^^^LAB^PI"
        ward, when = rng.choice(_WARDS), (self.clock() + timedelta(days=7)).strftime("%Y%m%d%H%M%S")
        code, test, unit, low, high = rng.choice(_TESTS)
        value = rng.randrange(low, high)

        def message(system: str, message_type: str, *segments: str) -> tuple[str, bytes]:
            return system, "\r".join((self._msh(system, message_type), *segments)).encode() + b"\r"

        yield message("PMS", "ADT^A04^ADT_A01", "EVN|A04", f"PID|1||{pms}||{name}", f"PV1|1|O|{ward}^1^1")
        yield message(
            "PMS",
            "SIU^S12^SIU_S12",
            f"SCH|A{n}^PMS|A{n}^PMS||||NEW|CHECK^Check-up|ROUTINE|30|min",
            f"TQ1|1||||||{when}",
            f"PID|1||{pms}||{name}",
            "RGS|1|A",
        )
        admitted = f"PV1|1|I|{ward}^2^1"
        yield message("EMR", "ADT^A01^ADT_A01", "EVN|A01", f"PID|1||{emr}~{pms}||{name}", admitted)
        result = f"OBX|1|NM|{code}^{test}^LN||{value}|{unit}|{low}-{high}|N|||F"
        order = f"OBR|1|O{n}^EMR|R{n}^LAB|{code}^{test}^LN|||{self.clock():%Y%m%d%H%M%S}|||||||||||||||||F"
        yield message("LAB", "ORU^R01^ORU_R01", f"PID|1||{lab}~{emr}||{name}", order, result)
        yield message(
            "PMS",
            "DFT^P03^DFT_P03",
            "EVN|P03",
            f"PID|1||{pms}||{name}",
            f"FT1|1|T{n}||{self.clock():%Y%m%d}||CG|99213^Office visit^CPT|||1|80.00&USD",
        )
        if n % 2:
            corrected = result.replace(f"||{value}|", f"||{value + 5}|").replace("|F", "|C")
            yield message(
                "LAB",
                "ORU^R01^ORU_R01",
                f"PID|1||{lab}~{emr}||{name}",
                order.replace("|F", "|C"),
                corrected,
                "NTE|1||Corrected: sample re-run",
            )


class Senders:
    """Sends a story's messages at ``rate`` a second, each system over its own connection and thread."""

    def __init__(self, story: Iterator[tuple[str, bytes]], ports: dict[str, int], rate: float, echo=print):
        self.story = iter(story)
        self.ports = ports
        self.interval = 1.0 / rate
        self.echo = echo
        self.sent: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._queues = {system: queue.Queue(maxsize=10) for system in ports}
        self._threads = [threading.Thread(target=self._pace, name="demo-pace")] + [
            threading.Thread(target=self._send, args=(system,), name=f"demo-{system}") for system in ports
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop pacing, let each sender finish the message in hand, and wait for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _pace(self) -> None:
        while not self._stop.wait(self.interval):
            system, payload = next(self.story)
            try:
                self._queues[system].put(payload, timeout=5)
            except queue.Full:  # the engine is not answering: wait, do not pile up
                continue

    def _send(self, system: str) -> None:
        client = None
        while not self._stop.is_set():
            try:
                payload = self._queues[system].get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                client = client or MLLPClient("127.0.0.1", self.ports[system], timeout=10)
                reply = client.request(payload)
            except OSError as exc:  # the engine is stopping or not there yet: drop this one, reconnect
                self.echo(f"demo: {system} could not send: {exc}")
                if client is not None:
                    client.close()
                client = None
                continue
            self.sent[system] += 1
            code = reply.split(b"MSA|", 1)[1][:2].decode("ascii", "replace") if b"MSA|" in reply else "?"
            self.answers[code] += 1
        if client is not None:
            client.close()


class Receiver:
    """A partner system receiving deliveries over MLLP: answers AA, or AR (ERR 207) while failing."""

    def __init__(self, name: str, *, failing: Callable[[], bool] = lambda: False):
        self.name = name
        self.failing = failing
        self.received = 0
        self.refused = 0
        self.sender = Sender(name, "DEMO")

    def handle(self, payload: bytes, peer: str) -> bytes:
        """The reply to one delivered message."""
        header = read_header(payload.decode("utf-8", "replace"))
        if self.failing():
            self.refused += 1
            errors = (AckError(207, f"{self.name} is down for maintenance; send again later"),)
            code = "AR"
        else:
            self.received += 1
            errors, code = (), "AA"
        ack = build_ack(
            Recipient.of(header),
            code,
            sender=self.sender,
            control_id=f"{self.name}-{self.received + self.refused}",
            timestamp=datetime.now(UTC),
            delimiters=header.delimiters,
            errors=errors,
        )
        return ack.encode()

    def internal_error(self, payload: bytes, reason: str) -> bytes:
        return b""

    def too_long(self, head: bytes, limit: int, peer: str) -> bytes:
        return b""
