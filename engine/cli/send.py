"""``hl7engine send``: HL7 files over MLLP (optionally TLS) to a listener, every ACK checked."""

from __future__ import annotations

import sys

import click

from engine.cli.app import main, read_sources


@main.command()
@click.argument("address")
@click.argument("sources", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each ACK.")
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
) -> None:
    """Send HL7 files, directories or stdin ('-') to ADDRESS (host:port) over MLLP and check each ACK."""
    from engine.hl7.ack import parse_reply
    from engine.listeners.client import MLLPClient, ReplyTimeout, control_id_of, split_messages

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter("expected host:port", param_hint="ADDRESS")
    context = _client_tls(tls, ca, cert, key)
    payloads: list[tuple[str, bytes]] = []
    for source in sources or ("-",):
        for name, data in read_sources(source):
            for index, payload in enumerate(split_messages(data, keep_batch_envelope=batch), start=1):
                payloads.append((f"{name}#{index}", payload))
    counts: dict[str, int] = {}
    failures = 0
    try:
        client = MLLPClient(host or "127.0.0.1", int(port), timeout=timeout, tls=context)
    except OSError as exc:  # refused, unreachable, or the TLS handshake failed
        click.echo(f"cannot connect to {address}: {exc}", err=True)
        sys.exit(1)
    try:
        with (
            click.progressbar(payloads, label="sending", file=sys.stderr)
            if not verbose and sys.stderr.isatty()
            else _plain(payloads) as items
        ):
            for name, payload in items:
                expected = control_id_of(payload)
                try:
                    reply = parse_reply(client.request(payload))
                except (ReplyTimeout, ConnectionError, OSError) as exc:
                    counts["timeout"] = counts.get("timeout", 0) + 1
                    failures += 1
                    click.echo(f"{name}: {exc}", err=True)
                    client.close()
                    client = MLLPClient(host or "127.0.0.1", int(port), timeout=timeout, tls=context)
                    continue
                matched = batch or reply.control_id == expected
                code = reply.code if matched else f"{reply.code} (MSA-2 {reply.control_id!r} != {expected!r})"
                counts[reply.code or "?"] = counts.get(reply.code or "?", 0) + 1
                if not (reply.positive and matched) and not (batch and reply.text.startswith(("BHS", "FHS"))):
                    failures += 1
                if verbose or not (reply.positive and matched):
                    click.echo(f"{name}: {expected or '(no control id)'} -> {code}", err=not verbose)
    finally:
        client.close()
    summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
    click.echo(f"sent {len(payloads)} message(s): {summary or 'none'}")
    if failures:
        sys.exit(1)


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


class _plain:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return self.items

    def __exit__(self, *exc):
        return False
