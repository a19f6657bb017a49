"""The load generator: K connections, one message in flight on each, every ACK checked.

The generator runs in processes of its own (``multiprocessing``, spawned), never sharing a GIL
with the server it measures. Each process drives its share of the connections with one
selector: on every connection it sends a message, waits for the whole framed reply, checks it
and only then sends the next one, as a real HL7 sender does. One process per 8 connections is
the default: on the 2-core machine it left the most CPU to the server (a bare framer answered
about 40,000 messages/s on 8 connections driven by one process, 19,000/s when driven by eight,
which then competed with it for the two cores).

The run has two phases on the system-wide monotonic clock: a warm-up whose messages are not
counted, then the measured window. A worker stops at the end of the window or when it has sent
its share of ``max_messages``, whichever comes first; replies are waited for at most
``reply_timeout`` seconds. Everything is bounded in count and in time.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import resource
import selectors
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field

from bench.messages import Template, generate

VT, FS_CR = b"\x0b", b"\x1c\x0d"
# Bytes kept in the receive buffer before a reply counts as runaway (no ACK is this long).
_MAX_REPLY_BYTES = 1 << 20
# The MSA segment: its field separator, then the rest of the segment.
_MSA = re.compile(rb"[\r\n]MSA(.)([^\r\n]*)")
_MAX_RECONNECTS = 20
TEMPLATES_PER_CONNECTION = 64


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, for how long."""

    port: int
    connections: int
    seconds: float
    warmup_seconds: float
    max_messages: int  # measured messages, over all connections
    tag: str  # prefix of every control id of this run, at most 9 characters, so ids stay within HL7's 20
    processes: int = 1  # generator processes; the connections are dealt out among them
    host: str = "127.0.0.1"
    seed: int = 2575
    reply_timeout: float = 10.0
    patients: int | None = (
        None  # draw every message's patient from one pool of this many (None: a new patient each)
    )
    kinds: tuple[str, ...] | None = None  # only these kinds of the mix (None: all of them)
    # Messages generated per connection, sent in turn: a message (and its patient) recurs after that many.
    templates: int = TEMPLATES_PER_CONNECTION


@dataclass
class LoadResult:
    """What the generator measured in the window (latencies in milliseconds)."""

    messages: int  # acknowledged (AA/CA, right MSA-2) in the measured window
    errors: int  # wrong, missing or late replies, warm-up included
    seconds: float
    latencies_ms: array = field(repr=False)
    error_samples: list[str]
    warmup_messages: int
    generator_cpu_seconds: float

    @property
    def rate(self) -> float:
        """Acknowledged messages per second over the measured window."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self, *fractions: float) -> list[float]:
        """The latencies (ms) that these fractions of the measured messages did not exceed (nearest rank)."""
        if not self.latencies_ms:
            return [float("nan")] * len(fractions)
        ordered = sorted(self.latencies_ms)
        return [ordered[min(len(ordered) - 1, max(0, math.ceil(f * len(ordered)) - 1))] for f in fractions]


def check_ack(reply: bytes, control_id: bytes) -> str | None:
    """Why this reply does not accept the message with this control id, or None when it does.

    Accepted means MSA-1 is AA or CA and MSA-2 is the control id sent. This is the load
    generator's hot loop, so it reads bytes and never decodes the reply.
    """
    found = _MSA.search(reply)
    if found is None:
        return "reply has no MSA segment"
    fields = found.group(2).split(found.group(1))  # fields[0] is MSA-1
    code = fields[0]
    if code not in (b"AA", b"CA"):
        return f"MSA-1 is {code.decode('ascii', 'replace')!r}"
    answered = fields[1] if len(fields) > 1 else b""
    if answered != control_id:
        return f"MSA-2 is {answered.decode('ascii', 'replace')!r}, sent {control_id.decode('ascii')!r}"
    return None


class _Flow:
    """One connection and the one message in flight on it."""

    def __init__(self, spec: LoadSpec, index: int, quota: int):
        self.spec = spec
        self.index = index
        self.quota = quota
        self.templates = generate(
            spec.templates, seed=spec.seed + index, patients=spec.patients, kinds=spec.kinds
        )
        self.prefix = f"{spec.tag}C{index:02d}".encode()
        self.sequence = 0
        self.acknowledged = 0  # measured, good replies
        self.control_id = b""
        self.sent = 0.0
        self.buffer = b""
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.spec.host, self.spec.port), timeout=self.spec.reply_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking, so sendall never returns early; the kernel bounds a stuck send.
        sock.settimeout(None)
        seconds = int(self.spec.reply_timeout)
        limit = struct.pack("ll", seconds, int((self.spec.reply_timeout - seconds) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        return sock

    def reconnect(self) -> None:
        self.sock.close()
        self.buffer = b""
        self.sock = self._connect()

    def send_next(self) -> None:
        """Send the next message with a fresh control id."""
        template: Template = self.templates[self.sequence % len(self.templates)]
        self.control_id = b"%s%07d" % (self.prefix, self.sequence)
        self.sequence += 1
        framed = b"".join((VT, template.head, self.control_id, template.tail, FS_CR))
        self.sent = time.monotonic()
        self.sock.sendall(framed)

    def take_reply(self, data: bytes) -> bytes | None:
        """Add received bytes; the payload of the reply once its frame is complete."""
        buffer = self.buffer + data
        end = buffer.find(FS_CR)
        if end < 0:
            if len(buffer) > _MAX_REPLY_BYTES:
                raise ConnectionError("reply longer than 1 MiB without an end of frame")
            self.buffer = buffer
            return None
        start = buffer.find(VT, 0, end)
        self.buffer = buffer[end + 2 :]
        return buffer[start + 1 if start >= 0 else 0 : end]


def _worker(spec: LoadSpec, shares: list[tuple[int, int]], pipe) -> None:
    """Drive some connections: report 'ready', wait for the schedule, run it, send back the figures."""
    try:
        _drive(spec, shares, pipe)
    except Exception as exc:  # reported to the parent, which fails the row with it
        pipe.send(("failed", f"load generator: {type(exc).__name__}: {exc}"))


def _drive(spec: LoadSpec, shares: list[tuple[int, int]], pipe) -> None:
    try:
        flows = [_Flow(spec, index, quota) for index, quota in shares]
    except OSError as exc:
        pipe.send(("failed", f"cannot connect to 127.0.0.1:{spec.port}: {exc}"))
        return
    pipe.send(("ready", None))
    if not pipe.poll(60):
        return
    measure_from, measure_until = pipe.recv()
    hard_stop = measure_until + spec.reply_timeout + 5
    latencies = array("d")
    samples: list[str] = []
    errors = reconnects = warmup = 0
    cpu_start = None
    last_done = measure_from
    monotonic = time.monotonic
    selector = selectors.DefaultSelector()
    active = {}

    def start(flow: _Flow) -> None:
        """Send the flow's next message, or retire it when its time or quota is up."""
        nonlocal cpu_start
        now = monotonic()
        if now >= measure_until or flow.acknowledged >= flow.quota:
            selector.unregister(flow.sock)
            del active[flow.sock]
            return
        if cpu_start is None and now >= measure_from:
            cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        flow.send_next()

    def failed(flow: _Flow, problem: str) -> None:
        """Count an error and carry on over a new connection (a bounded number of times)."""
        nonlocal errors, reconnects
        errors += 1
        if len(samples) < 5:
            samples.append(problem)
        selector.unregister(flow.sock)
        del active[flow.sock]
        reconnects += 1
        if reconnects > _MAX_RECONNECTS:
            raise ConnectionError(f"gave up after {_MAX_RECONNECTS} reconnects; last error: {problem}")
        flow.reconnect()
        selector.register(flow.sock, selectors.EVENT_READ, flow)
        active[flow.sock] = flow

    for flow in flows:
        selector.register(flow.sock, selectors.EVENT_READ, flow)
        active[flow.sock] = flow
    for flow in flows:
        start(flow)
    while active and monotonic() < hard_stop:
        for key, _ in selector.select(0.2):
            flow = key.data
            try:
                data = flow.sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed by the server")
                reply = flow.take_reply(data)
            except OSError as exc:  # ConnectionError included
                failed(flow, f"{type(exc).__name__}: {exc}")
                start(flow)
                continue
            if reply is None:
                continue
            done = monotonic()
            problem = check_ack(reply, flow.control_id)
            if problem is not None:
                # An error counts wherever it happens, warm-up included; only good replies are timed.
                errors += 1
                if len(samples) < 5:
                    samples.append(problem)
            elif flow.sent < measure_from:
                warmup += 1
            else:
                latencies.append((done - flow.sent) * 1000.0)
                flow.acknowledged += 1
            if flow.sent >= measure_from:
                last_done = done
            start(flow)
        now = monotonic()
        for flow in [f for f in active.values() if now - f.sent > spec.reply_timeout]:
            failed(flow, f"no reply within {spec.reply_timeout:g} s")
            start(flow)
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (
        0.0
        if cpu_start is None
        else (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_start.ru_utime + cpu_start.ru_stime)
    )
    for flow in flows:
        flow.sock.close()
    pipe.send(("done", (latencies, errors, samples, warmup, last_done, cpu)))


def run_load(spec: LoadSpec, on_window=None) -> LoadResult:
    """Run the load and return what was measured.

    ``on_window(phase)`` is called with ``"start"`` when the measured window opens and ``"end"``
    when every worker has finished (the caller samples the server's CPU time there).
    """
    context = multiprocessing.get_context("spawn")
    quotas = [
        spec.max_messages // spec.connections + (1 if i < spec.max_messages % spec.connections else 0)
        for i in range(spec.connections)
    ]
    workers = min(spec.processes, spec.connections)
    pipes, processes = [], []
    for worker in range(workers):
        parent_end, child_end = context.Pipe()
        shares = [(index, quotas[index]) for index in range(worker, spec.connections, workers)]
        process = context.Process(target=_worker, args=(spec, shares, child_end), daemon=True)
        process.start()
        pipes.append(parent_end)
        processes.append(process)
    try:
        for pipe, process in zip(pipes, processes, strict=True):
            status, detail = _receive(pipe, process, time.monotonic() + 60, "start")
            if status != "ready":
                raise RuntimeError(detail)
        measure_from = time.monotonic() + spec.warmup_seconds
        measure_until = measure_from + spec.seconds
        for pipe in pipes:
            pipe.send((measure_from, measure_until))
        time.sleep(max(0.0, measure_from - time.monotonic()))
        if on_window:
            on_window("start")
        outcomes = []
        deadline = measure_until + spec.reply_timeout + 30
        for pipe, process in zip(pipes, processes, strict=True):
            status, detail = _receive(pipe, process, deadline, "finish")
            if status != "done":
                raise RuntimeError(detail)
            outcomes.append(detail)
        if on_window:
            on_window("end")
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    latencies = array("d")
    samples: list[str] = []
    for part, _, problems, _, _, _ in outcomes:
        latencies.extend(part)
        samples.extend(problems[: 5 - len(samples)])
    window_end = max(outcome[4] for outcome in outcomes)
    return LoadResult(
        messages=len(latencies),
        errors=sum(outcome[1] for outcome in outcomes),
        seconds=max(window_end - measure_from, 1e-9),
        latencies_ms=latencies,
        error_samples=samples,
        warmup_messages=sum(outcome[3] for outcome in outcomes),
        generator_cpu_seconds=sum(outcome[5] for outcome in outcomes),
    )


def _receive(pipe, process, deadline: float, what: str):
    """The next report of a worker; raise when it died or missed the deadline."""
    while not pipe.poll(0.1):
        if not process.is_alive() and not pipe.poll(0):
            raise RuntimeError(
                f"a load generator process exited with {process.exitcode} before it could {what}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"a load generator process did not {what} in time")
    return pipe.recv()


def default_tag() -> str:
    """A control-id prefix that does not repeat for two days.

    It is 4 base-36 digits of the clock in tenths of a second.
    """
    value = int(time.time() * 10) % (36**4)
    digits = ""
    for _ in range(4):
        value, remainder = divmod(value, 36)
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[remainder] + digits
    return digits
