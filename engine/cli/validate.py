"""``hl7engine validate``: the findings of HL7 files against their version and structure (no engine)."""

from __future__ import annotations

import json
import sys

import click

from engine.cli.app import read_sources

__all__ = ["message_texts"]


def message_texts(data: bytes):
    """The messages of a file as decoded text: each member of a batch or file envelope, or the one message."""
    from engine.errors import HL7Error
    from engine.hl7.batch import looks_like_batch, split_batch
    from engine.hl7.charset import decode

    text = decode(data, "utf-8").text
    if looks_like_batch(text):
        try:
            return list(split_batch(text).messages)
        except HL7Error:
            pass  # a broken envelope: read as one message, whose findings say so
    return [text]


@click.command("validate")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@click.option("--version", "version", default=None, help="Validate as this HL7 version instead of MSH-12.")
def validate_command(sources: tuple[str, ...], as_json: bool, version: str | None) -> None:
    """Print the findings of HL7 files (directories, '-' for stdin); exit 1 if one fails strict validation."""
    from engine.hl7.validate import validate

    failed = 0
    for source in sources:
        for name, data in read_sources(source):
            for index, text in enumerate(message_texts(data), start=1):
                report = validate(text, version=version)
                failed += report.failed
                where = f"{name}#{index}"
                if as_json:
                    click.echo(json.dumps({"message": where, **report.to_json_dict()}, sort_keys=True))
                    continue
                verdict = "fails" if report.failed else "passes"
                structure = report.structure or "no known structure"
                click.echo(f"{where}: {verdict} ({structure}, version {report.version or '?'})")
                for finding in report.findings:
                    click.echo(f"  {finding.severity} {finding.code} {finding.location}: {finding.text}")
    if failed:
        click.echo(f"{failed} message(s) fail strict validation", err=True)
        sys.exit(1)
