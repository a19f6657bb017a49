"""Store-only intake through a real socket: CPU of the engine's process per message.

The engine (``engine.service.Engine`` on the bench's intake config: one MLLP listener, one
catch-all channel, no destinations, SQLite ``durability: process``) runs in this process; a
client in another process sends the bench's messages on ``--connections`` connections, one in
flight on each, and checks every ACK. The CPU time of this process (reactor, writer thread,
SQLite) from the end of the warm-up to the last ACK is printed per message:

    python bench/intake_cpu.py [--messages 8000] [--connections 1] [--realistic] [--engine-root DIR]

``--warmup`` messages (default: a quarter of ``--messages``) are sent first and not counted.
For instruction counts run it under ``valgrind --tool=callgrind`` (the client is not traced)
with ``--warmup 0`` at n and 2n messages: (Ir(2n) - Ir(n)) / n a message.
``--realistic`` gives the channel the realistic scenario's three destinations (bench/realistic.py)
and the engine the roles of ``hl7engine run --workers 1``'s main process but its jobs (intake and
processing): each message is processed at intake and stored with its deliveries and events, which
nothing delivers here (the partner's port is closed).
``--engine-root DIR`` measures the ``engine/`` package of another checkout (default: this one).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REPLY_END = b"\x1c\x0d"
_CLIENT_TIMEOUT = 1800.0  # long enough under valgrind on a loaded machine


def client(port: int, connections: int, messages: int) -> None:
    """Send ``messages`` over ``connections`` connections, one in flight each; exit 1 on a wrong ACK."""
    from bench.messages import generate

    templates = generate(200)
    selector = selectors.DefaultSelector()
    replies: dict[socket.socket, bytearray] = {}
    sent = 0

    def send(sock: socket.socket) -> None:
        nonlocal sent
        message = templates[sent % len(templates)].render(b"CPU%08d" % sent)
        sent += 1
        sock.sendall(b"\x0b" + message + _REPLY_END)

    for _ in range(min(connections, messages)):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies[sock] = bytearray()
        selector.register(sock, selectors.EVENT_READ)
        send(sock)
    answered = 0
    deadline = time.monotonic() + _CLIENT_TIMEOUT
    while answered < messages and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            chunk = sock.recv(65536)
            if not chunk:
                sys.exit("the engine closed a connection")
            reply = replies[sock]
            reply += chunk
            if not reply.endswith(_REPLY_END):
                continue
            if b"MSA|AA|" not in reply:
                sys.exit(f"not an AA: {bytes(reply[:200])!r}")
            reply.clear()
            answered += 1
            if sent < messages:
                send(sock)
    if answered < messages:
        sys.exit(f"only {answered} of {messages} answered in {_CLIENT_TIMEOUT:g}s")


def serve(options: argparse.Namespace) -> None:
    """Run the engine in process, the client in a subprocess; print CPU a message."""
    sys.path[:0] = [str(options.engine_root.resolve()), str(ROOT)]
    from twisted.internet import protocol, reactor

    from bench.realistic import channels
    from bench.systems import Engine as EngineSystem
    from bench.systems import EngineSetup, free_port
    from engine import __file__ as engine_file
    from engine.config import load_config
    from engine.service import Engine

    folder = Path(tempfile.mkdtemp(prefix="intake-cpu-"))
    port = free_port()
    path = folder / "channels.yaml"
    setup = (
        EngineSetup(channels=channels(free_port(), str(folder / "archive")))
        if options.realistic
        else EngineSetup()
    )
    path.write_text(EngineSystem("engine", "engine", "process", setup).config(port, folder))
    roles = {"roles": {"intake", "processing"}} if options.realistic else {}
    engine = Engine(load_config(path), reactor, **roles)
    total = options.warmup + options.messages
    marks: dict[str, float] = {}
    intake = engine.intakes["bench"]
    handle = intake.handle
    handled = 0

    def counted(payload: bytes, peer: str):
        nonlocal handled
        if handled == options.warmup:
            marks["cpu"], marks["wall"] = time.process_time(), time.perf_counter()
        handled += 1
        return handle(payload, peer)

    intake.handle = counted

    class Client(protocol.ProcessProtocol):
        def outReceived(self, data: bytes) -> None:
            sys.stdout.buffer.write(data)

        errReceived = outReceived

        def processEnded(self, reason) -> None:
            cpu, wall = time.process_time() - marks["cpu"], time.perf_counter() - marks["wall"]
            marks["exit"] = reason.value.exitCode
            print(
                f"engine: {Path(engine_file).parent}\n{options.connections} connection(s):"
                f" {cpu / options.messages * 1e6:.1f} us CPU a message,"
                f" {options.messages / wall:,.0f} msg/s"
            )
            engine.stopService().addBoth(lambda _: reactor.stop())

    def start() -> None:
        engine.startService()
        argv = [sys.executable, __file__, "--client", str(port), str(options.connections), str(total)]
        reactor.spawnProcess(Client(), sys.executable, argv, env=None, path=str(ROOT))

    reactor.callWhenRunning(start)
    reactor.run()
    if marks.get("exit"):
        sys.exit(f"the client failed (exit {marks['exit']})")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        sys.path.insert(0, str(ROOT))
        client(*(int(value) for value in sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="messages not counted (default n/4)")
    parser.add_argument("--realistic", action="store_true", help="the realistic scenario's destinations")
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="folder holding engine/")
    options = parser.parse_args()
    if options.warmup is None:
        options.warmup = options.messages // 4
    serve(options)


if __name__ == "__main__":
    main()
