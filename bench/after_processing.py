"""How soon a sender waiting with ``respond: after_processing`` is answered after the partner's ACK.

One sender, one message at a time, to an engine (``hl7engine run``, its own process) whose channel
delivers to a partner over MLLP (an AA receiver in this process) and to the patient record. For each
message: the time from the partner's ACK leaving the partner to the engine's answer reaching the
sender, and the whole round trip. Prints the median and p99 of both.

    python bench/after_processing.py --messages 400 [--workers N] [--engine-root /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.hl7.mllp import frame  # noqa: E402
from engine.listeners.client import MLLPClient, control_id_of  # noqa: E402
from tests.fakes.harness import free_port  # noqa: E402
from tests.fakes.outbound import ack  # noqa: E402
from tests.fakes.process import wait_for_port  # noqa: E402

CONFIG = """
engine:
  application: HUB
  facility: BENCH
  data_dir: {data_dir}
listeners:
  - name: main
    endpoint: "tcp:{port}:interface=127.0.0.1"
channels:
  - name: waits
    source: main
    respond: after_processing
    respond_timeout_seconds: 10
    accept: {{types: ["*"]}}
    destinations:
      - name: partner
        type: mllp
        host: 127.0.0.1
        port: {partner_port}
      - {{name: record, type: record}}
"""

ADT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|BENCH|20260101120000||ADT^A04^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A04|20260101120000\r"
    "PID|1||{n}^^^PMS^MR||DOE^JOHN||19800101|M|||1 MAIN ST^^TOWN^ST^12345\r"
    "PV1|1|O|4N^101^A\r"
)


class Partner:
    """An AA receiver on a thread; notes when each ACK left, by control id."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.acked_at: dict[str, float] = {}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            while b"\x1c\r" in buffer:
                head, buffer = buffer.split(b"\x1c\r", 1)
                payload = head[head.index(b"\x0b") + 1 :]
                control_id = control_id_of(payload)
                reply = frame(ack("AA", control_id))
                self.acked_at[control_id] = time.perf_counter()
                conn.sendall(reply)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--engine-root", default=str(ROOT), help="run the engine package of DIR/engine")
    parser.add_argument("--workers", type=int, default=None, help="run's --workers (default: run's own)")
    args = parser.parse_args()
    partner = Partner()
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "channels.yaml"
        config.write_text(CONFIG.format(data_dir=Path(work) / "data", port=port, partner_port=partner.port))
        env = dict(os.environ, PYTHONPATH=args.engine_root)
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from engine.cli import main; main()",
                "run",
                "-c",
                str(config),
                "--log-level",
                "warn",
                *(["--workers", str(args.workers)] if args.workers is not None else []),
            ],
            env=env,
            cwd=work,
            stderr=subprocess.PIPE,  # warnings only: read if it exits early
        )
        try:
            wait_for_port(port, server)
            after_ack, round_trip = [], []
            measured_from = 0.0
            with MLLPClient("127.0.0.1", port, timeout=20) as client:
                for n in range(args.warmup + args.messages):
                    if n == args.warmup:
                        measured_from = time.perf_counter()
                    cid = f"C{n:06d}"
                    started = time.perf_counter()
                    reply = client.request(ADT.format(cid=cid, n=n).encode())
                    answered = time.perf_counter()
                    if b"MSA|AA|" + cid.encode() not in reply:
                        raise SystemExit(f"unexpected answer to {cid}: {reply[:200]!r}")
                    if n >= args.warmup:
                        after_ack.append((answered - partner.acked_at[cid]) * 1000)
                        round_trip.append((answered - started) * 1000)
                rate = args.messages / (time.perf_counter() - measured_from)
        finally:
            server.terminate()
            server.wait(30)
    for name, values in (("partner ACK -> answer", after_ack), ("round trip", round_trip)):
        print(
            f"{name:24s} median {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms"
            f"   ({len(values)} messages)"
        )
    print(f"{'answers a second':24s} {rate:7.1f}")


if __name__ == "__main__":
    main()
