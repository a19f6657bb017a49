"""An engine with its web server, a listener and a channel to a test partner: what the dashboard shows."""

from __future__ import annotations

from pathlib import Path

from engine.config import parse_config
from engine.listeners.client import MLLPClient
from tests.fakes.web import USERS

ADT = (
    "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^{event}^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|{event}|20260101120000\r"
    "PID|1||{n}^^^PMS^MR||DOE^JOHN||19800101|M\r"
    "PV1|1|O|4N^101^A\r"
)


def adt(n: int, event: str = "A04") -> bytes:
    """An ADT message numbered ``n`` (control id C000n)."""
    return ADT.format(cid=f"C{n:04d}", n=n, event=event).encode()


def send(port: int, *payloads: bytes) -> None:
    """Send each message over MLLP, waiting for its ACK (blocking: run it in a thread)."""
    with MLLPClient("127.0.0.1", port, timeout=10) as client:
        for payload in payloads:
            client.request(payload)


def dashboard_config(tmp_path: Path, partner_port: int, *, on_error: str = "block", extra: str = ""):
    """The Config: web users (tests.fakes.web), listener ``main``, channel ``adt`` to destination ``emr``."""
    users = "\n".join(f'      {name}: "{secret}"' for name, secret in USERS.items())
    text = f"""
engine:
  application: HUB
  facility: TEST
  data_dir: data
  store:
    url: sqlite:///{tmp_path / "store.db"}
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
    users:
{users}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: adt
    source: main
    accept: {{types: ["*"]}}
    destinations:
      - name: emr
        type: mllp
        host: 127.0.0.1
        port: {partner_port}
        ack_timeout_seconds: 2
        connect_timeout_seconds: 1
        queue:
          on_error: {on_error}
          retry_initial_seconds: 0.05
          retry_max_seconds: 0.2
          retry_jitter: 0
          max_attempts: 1000
{extra}
"""
    (tmp_path / "channels.yaml").write_text(text)
    return parse_config(text, source=str(tmp_path / "channels.yaml"), base_dir=tmp_path)
