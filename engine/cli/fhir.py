"""``hl7engine fhir``: HL7 v2 files as FHIR R4 Bundles (JSON), without running the engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.cli.app import main
from engine.errors import HL7Error
from engine.fhirmap.bundle import BUNDLE_TYPES, to_fhir_bundle
from engine.hl7.batch import split_batch
from engine.hl7.charset import decode
from engine.hl7.message import Message


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--bundle-type",
    type=click.Choice(BUNDLE_TYPES),
    default="transaction",
    show_default=True,
    help="transaction: with conditional requests for a FHIR server; collection: the resources only.",
)
def fhir(files: tuple[Path, ...], bundle_type: str) -> None:
    """Print each message of FILES (batches split) as a FHIR R4 Bundle, one JSON document per message.

    Times without an offset are read in this machine's time zone. Exit status 1 when a file or
    message could not be read (the others are still printed).
    """
    failed = False
    for path in files:
        try:
            members = split_batch(decode(path.read_bytes()).text).messages
        except (OSError, HL7Error) as exc:
            click.echo(f"{path}: {exc}", err=True)
            failed = True
            continue
        for number, text in enumerate(members, start=1):
            try:
                bundle = to_fhir_bundle(Message.parse(text), bundle_type=bundle_type)
            except HL7Error as exc:
                click.echo(f"{path}#{number}: {exc}", err=True)
                failed = True
                continue
            click.echo(json.dumps(bundle, indent=2, ensure_ascii=False))
    if failed:
        sys.exit(1)
