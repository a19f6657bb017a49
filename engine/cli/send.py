"""``hl7engine send``: HL7 files over MLLP (optionally TLS) to a listener, every ACK checked."""

from __future__ import annotations

import sys
from contextlib import nullcontext

import click

from engine.cli.app import echo_json, progress, read_sources


@click.command()
@click.argument("address")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, allow_dash=True))
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each ACK.",
)
@click.option("--batch", is_flag=True, help="Send each file as one frame, batch envelope included.")
@click.option("-v", "--verbose", is_flag=True, help="Print one line per message.")
@click.option("--tls", is_flag=True, help="Speak TLS; the listener's certificate must match the host.")
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: PEM CA certificate(s) to trust (default: the system's).",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: our PEM client certificate, for a listener that requires one (with --key).",
)
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="With --tls: the --cert's PEM key.")
@click.option("--json", "as_json", is_flag=True, help="The outcome as one JSON object: counts, failures.")
def send(
    address: str,
    sources: tuple[str, ...],
    timeout: float,
    batch: bool,
    verbose: bool,
    tls: bool,
    ca: str | None,
    cert: str | None,
    key: str | None,
    as_json: bool,
) -> None:
    """Send HL7 files, directories or stdin ('-') to ADDRESS (host:port) over MLLP and check each ACK.

    Exit status: 0 every message acknowledged with AA/CA, 1 any other answer or none, 2 a usage error.
    """
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("expected host:port, the port 1-65535", param_hint="ADDRESS")
    context = _client_tls(tls, ca, cert, key)
    from engine.listeners.client import split_messages

    payloads: list[tuple[str, bytes]] = []
    for source in sources or ("-",):
        for name, data in read_sources(source):
            for index, payload in enumerate(split_messages(data, keep_batch_envelope=batch), start=1):
                payloads.append((f"{name}#{index}", payload))
    if not payloads:
        raise click.ClickException(f"no HL7 message in {', '.join(sources or ('stdin',))}: nothing sent")
    sender = _Sender(host or "127.0.0.1", int(port), timeout, context, batch)
    results = []
    try:
        with progress(payloads, len(payloads), "sending") if not verbose else nullcontext(payloads) as items:
            for name, payload in items:
                result = sender.send(name, payload)
                results.append(result)
                if verbose or not result["ok"]:
                    click.echo(_line(result), err=not verbose or as_json)
    finally:
        sender.close()
    counts: dict[str, int] = {}
    for result in results:
        counts[result["code"] or "?"] = counts.get(result["code"] or "?", 0) + 1
    failed = [result for result in results if not result["ok"]]
    if as_json:
        echo_json({"sent": len(results), "codes": counts, "failed": failed})
    else:
        summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
        click.echo(f"sent {len(payloads)} message(s): {summary or 'none'}")
    if failed:
        sys.exit(1)


def _line(result: dict) -> str:
    """One message's outcome: where from, its control id (or why it has none), the answer and its reason."""
    control_id = result["control_id"] or "(no control id)"
    reason = f": {result['reason']}" if result["reason"] else ""
    return f"{result['source']}: {control_id} -> {result['code'] or 'no answer'}{reason}"


class _Sender:
    """One connection, opened again after a failure; ``send`` says what became of one message."""

    def __init__(self, host: str, port: int, timeout: float, tls, batch: bool) -> None:
        self.host, self.port, self.timeout, self.tls, self.batch = host, port, timeout, tls, batch
        self.client = self._connect()

    def _connect(self):
        from engine.listeners.client import MLLPClient

        try:
            return MLLPClient(self.host, self.port, timeout=self.timeout, tls=self.tls)
        except OSError as exc:  # refused, unreachable, or the TLS handshake failed
            raise click.ClickException(f"cannot connect to {self.host}:{self.port}: {exc}") from None

    def send(self, name: str, payload: bytes) -> dict:
        from engine.hl7.ack import parse_reply
        from engine.listeners.client import ReplyTimeout, control_id_of

        expected = control_id_of(payload)
        result = {"source": name, "control_id": expected, "code": "", "reason": "", "ok": False}
        try:
            reply = parse_reply(self.client.request(payload))
        except (ReplyTimeout, ConnectionError, OSError) as exc:
            self.client.close()
            self.client = self._connect()
            return {**result, "code": "timeout", "reason": str(exc) or type(exc).__name__}
        matched = self.batch or reply.control_id == expected
        ok = (reply.positive and matched) or (self.batch and reply.text.startswith(("BHS", "FHS")))
        reason = "" if reply.positive else reply_reason(reply.text)
        if not matched:
            reason = f"MSA-2 {reply.control_id!r} != {expected!r}" + (f"; {reason}" if reason else "")
        return {**result, "code": reply.code, "reason": reason, "ok": ok}

    def close(self) -> None:
        self.client.close()


def reply_reason(text: str) -> str:
    """Why a receiver did not accept a message: its ERR texts, else MSA-3; '' when it says nothing."""
    from engine.errors import HL7Error
    from engine.hl7.message import Message

    try:
        message = Message.parse(text)
    except HL7Error:
        return ""
    reasons = []
    for n in range(1, len(message.segments_named("ERR")) + 1):
        text8, text3, text1 = (message.get(f"ERR[{n}]-{path}") for path in ("8", "3.2", "1.4.2"))
        reasons.append(text8 or text3 or text1)
    return "; ".join(r for r in reasons if r) or message.get("MSA-3")


def _client_tls(tls: bool, ca: str | None, cert: str | None, key: str | None):
    """The TLS context `send` connects with, or None without --tls (the destinations' client side)."""
    if not tls:
        if ca or cert or key:
            raise click.UsageError("--ca, --cert and --key need --tls")
        return None
    if (cert is None) != (key is None):
        raise click.UsageError("give --cert and --key together")
    from pydantic import ValidationError

    from engine.channels.destinations.mllp import client_tls_context
    from engine.channels.destinations.spec import TlsSettings

    try:
        settings = TlsSettings(ca_file=ca, cert_file=cert, key_file=key)
    except ValidationError as error:  # a file that holds no PEM, a key that is encrypted
        raise click.UsageError(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        ) from None
    return client_tls_context(settings)
